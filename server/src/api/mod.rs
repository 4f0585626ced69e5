//! EC2 actions, one module per resource family, and the machinery they share.

pub mod addresses;
pub mod common;
pub mod iam;
pub mod iam_instance_profiles;
pub mod images;
pub mod instance_metadata;
pub mod instance_types;
pub mod instances;
pub mod internet_gateways;
pub mod key_pairs;
pub mod network_interfaces;
pub mod regions;
pub mod route_tables;
pub mod security_groups;
pub mod subnets;
pub mod tags;
pub mod volumes;
pub mod vpcs;

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::compute::Compute;
use crate::dataplane::DataPlane;
use crate::error::ApiError;
use crate::model;
use crate::protocol::query::{FromQuery, QueryNode};
use crate::protocol::xml::{self, ToXml};
use crate::storage::Storage;
use crate::store::{Store, Tx};

/// Work that must wait until the transaction has committed, such as starting a machine
/// whose events will update the records just written.
pub type Effect = Box<dyn FnOnce() + Send>;

/// What a handler sees: the caller's scoped transaction and the shared services.
pub struct Ctx<'a, 'c> {
    pub tx: &'a Tx<'c>,
    pub api: &'a Api,
    effects: &'a RefCell<Vec<Effect>>,
}

impl<'a, 'c> Ctx<'a, 'c> {
    pub fn new(tx: &'a Tx<'c>, api: &'a Api, effects: &'a RefCell<Vec<Effect>>) -> Self {
        Ctx { tx, api, effects }
    }

    pub fn account(&self) -> &str {
        &self.tx.account
    }

    pub fn region(&self) -> &str {
        &self.tx.region
    }

    /// Runs `f` once this call's transaction has committed; dropped if it rolls back.
    pub fn after_commit(&self, f: impl FnOnce() + Send + 'static) {
        self.effects.borrow_mut().push(Box::new(f));
    }

    /// Something that moves packets changed (security group rules, addresses, ENIs, metadata
    /// options): the data plane re-reads it once this call has committed.
    pub fn network_changed(&self) {
        let dataplane = self.api.dataplane.clone();
        self.after_commit(move || dataplane.sync());
    }
}

/// Shared API state.
pub struct Api {
    pub store: Arc<Store>,
    pub compute: Arc<Compute>,
    pub storage: Arc<Storage>,
    pub dataplane: Arc<DataPlane>,
    /// Scopes whose defaults (default VPC and friends) are known to exist, so the common
    /// path never writes.
    seeded: Mutex<HashSet<(String, String)>>,
    /// Root image sizes of on-demand built-in AMIs found in the cache, looked up once per
    /// process (the lookup runs the recipe); `None` when not built.
    on_demand: Mutex<std::collections::HashMap<String, Option<u64>>>,
}

/// A response ready for the wire.
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Api {
    pub fn new(store: Arc<Store>, compute: Arc<Compute>, storage: Arc<Storage>) -> Self {
        Api {
            store,
            compute,
            storage,
            dataplane: Arc::new(DataPlane::new()),
            seeded: Mutex::new(HashSet::new()),
            on_demand: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The root image size of an on-demand built-in AMI, if `ec2d images` has built it.
    pub fn cached_builtin_size(&self, recipe: &str) -> Option<u64> {
        let mut known = self.on_demand.lock().unwrap_or_else(|p| p.into_inner());
        *known.entry(recipe.to_string()).or_insert_with(|| {
            match self.storage.cached_builtin(recipe) {
                Ok(found) => found.map(|b| b.manifest.size_bytes),
                Err(e) => {
                    tracing::warn!(recipe, error = %e, "cannot look for a built-in AMI");
                    None
                }
            }
        })
    }

    /// Decodes, runs and encodes one EC2 action for an authenticated caller.
    pub fn handle(
        &self,
        account: &str,
        region: &str,
        action: &str,
        params: QueryNode,
        request_id: &str,
    ) -> Result<String, ApiError> {
        self.ensure_seeded(account, region)?;
        let call = Call {
            api: self,
            account,
            region,
            action,
            params,
            request_id,
        };
        dispatch(call)
    }

    fn ensure_seeded(&self, account: &str, region: &str) -> Result<(), ApiError> {
        let key = (account.to_string(), region.to_string());
        {
            let seeded = self
                .seeded
                .lock()
                .map_err(|_| ApiError::internal("lock poisoned"))?;
            if seeded.contains(&key) {
                return Ok(());
            }
        }
        let effects = RefCell::new(Vec::new());
        self.store.transaction(account, region, |tx| {
            if tx.first_use()? {
                vpcs::create_default_vpc(&Ctx {
                    tx,
                    api: self,
                    effects: &effects,
                })?;
            }
            Ok(())
        })?;
        self.seeded
            .lock()
            .map_err(|_| ApiError::internal("lock poisoned"))?
            .insert(key);
        Ok(())
    }
}

struct Call<'a> {
    api: &'a Api,
    account: &'a str,
    region: &'a str,
    action: &'a str,
    params: QueryNode,
    request_id: &'a str,
}

impl Call<'_> {
    /// The one path every action takes: decode the generated input, honour DryRun and
    /// ClientToken, run the handler in a transaction, encode the generated output.
    fn run<I, O>(self, handler: fn(&Ctx, I) -> Result<O, ApiError>) -> Result<String, ApiError>
    where
        I: FromQuery,
        O: ToXml,
    {
        let dry_run = self.params.get_value("DryRun").map(str::to_ascii_lowercase);
        let client_token = self.params.get_value("ClientToken").map(str::to_string);
        let fingerprint = client_token.as_ref().map(|_| fingerprint(&self.params));
        let input = I::from_query(self.params, "")?;
        if dry_run.as_deref() == Some("true") {
            return Err(ApiError::new(
                "DryRunOperation",
                "Request would have succeeded, but DryRun flag is set.",
            )
            .with_status(412));
        }
        let action = self.action;
        let request_id = self.request_id;
        let api = self.api;
        let effects = RefCell::new(Vec::new());
        let body = api.store.transaction(self.account, self.region, |tx| {
            if let (Some(token), Some(fp)) = (&client_token, &fingerprint)
                && let Some((stored_fp, response)) = tx.idempotent(action, token)?
            {
                if &stored_fp != fp {
                    return Err(ApiError::new(
                        "IdempotentParameterMismatch",
                        format!(
                            "The client token '{token}' was already used with different parameters."
                        ),
                    ));
                }
                // The same result, under this request's own id.
                return Ok(replace_request_id(&response, request_id));
            }
            let output = handler(&Ctx::new(tx, api, &effects), input)?;
            let body = xml::response(action, request_id, &output);
            if let (Some(token), Some(fp)) = (&client_token, &fingerprint) {
                tx.remember(action, token, fp, &body)?;
            }
            Ok(body)
        })?;
        for effect in effects.into_inner() {
            effect();
        }
        Ok(body)
    }
}

fn replace_request_id(response: &str, request_id: &str) -> String {
    let (Some(start), Some(end)) = (response.find("<requestId>"), response.find("</requestId>"))
    else {
        return response.to_string();
    };
    format!(
        "{}<requestId>{request_id}{}",
        &response[..start],
        &response[end..]
    )
}

/// A stable digest of a request's parameters, to tell a ClientToken retry from a reuse.
fn fingerprint(params: &QueryNode) -> String {
    let mut h = Sha256::new();
    h.update(format!("{params:?}").as_bytes());
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn dispatch(call: Call<'_>) -> Result<String, ApiError> {
    match call.action {
        "DescribeRegions" => call.run(regions::describe_regions),
        "DescribeAvailabilityZones" => call.run(regions::describe_availability_zones),
        "DescribeAccountAttributes" => call.run(regions::describe_account_attributes),
        "DescribeInstanceTypes" => call.run(instance_types::describe_instance_types),
        "DescribeInstanceTypeOfferings" => {
            call.run(instance_types::describe_instance_type_offerings)
        }
        "CreateKeyPair" => call.run(key_pairs::create_key_pair),
        "ImportKeyPair" => call.run(key_pairs::import_key_pair),
        "DescribeKeyPairs" => call.run(key_pairs::describe_key_pairs),
        "DeleteKeyPair" => call.run(key_pairs::delete_key_pair),
        "CreateVpc" => call.run(vpcs::create_vpc),
        "DescribeVpcs" => call.run(vpcs::describe_vpcs),
        "DeleteVpc" => call.run(vpcs::delete_vpc),
        "ModifyVpcAttribute" => call.run(vpcs::modify_vpc_attribute),
        "DescribeVpcAttribute" => call.run(vpcs::describe_vpc_attribute),
        "CreateSubnet" => call.run(subnets::create_subnet),
        "DescribeSubnets" => call.run(subnets::describe_subnets),
        "DeleteSubnet" => call.run(subnets::delete_subnet),
        "ModifySubnetAttribute" => call.run(subnets::modify_subnet_attribute),
        "CreateSecurityGroup" => call.run(security_groups::create_security_group),
        "DescribeSecurityGroups" => call.run(security_groups::describe_security_groups),
        "DeleteSecurityGroup" => call.run(security_groups::delete_security_group),
        "AuthorizeSecurityGroupIngress" => call.run(security_groups::authorize_ingress),
        "AuthorizeSecurityGroupEgress" => call.run(security_groups::authorize_egress),
        "RevokeSecurityGroupIngress" => call.run(security_groups::revoke_ingress),
        "RevokeSecurityGroupEgress" => call.run(security_groups::revoke_egress),
        "DescribeSecurityGroupRules" => call.run(security_groups::describe_security_group_rules),
        "CreateInternetGateway" => call.run(internet_gateways::create_internet_gateway),
        "AttachInternetGateway" => call.run(internet_gateways::attach_internet_gateway),
        "DetachInternetGateway" => call.run(internet_gateways::detach_internet_gateway),
        "DescribeInternetGateways" => call.run(internet_gateways::describe_internet_gateways),
        "DeleteInternetGateway" => call.run(internet_gateways::delete_internet_gateway),
        "CreateRouteTable" => call.run(route_tables::create_route_table),
        "DescribeRouteTables" => call.run(route_tables::describe_route_tables),
        "DeleteRouteTable" => call.run(route_tables::delete_route_table),
        "CreateRoute" => call.run(route_tables::create_route),
        "DeleteRoute" => call.run(route_tables::delete_route),
        "ReplaceRoute" => call.run(route_tables::replace_route),
        "AssociateRouteTable" => call.run(route_tables::associate_route_table),
        "DisassociateRouteTable" => call.run(route_tables::disassociate_route_table),
        "ReplaceRouteTableAssociation" => call.run(route_tables::replace_route_table_association),
        "RunInstances" => call.run(instances::run_instances),
        "DescribeInstances" => call.run(instances::describe_instances),
        "TerminateInstances" => call.run(instances::terminate_instances),
        "StopInstances" => call.run(instances::stop_instances),
        "StartInstances" => call.run(instances::start_instances),
        "RebootInstances" => call.run(instances::reboot_instances),
        "DescribeInstanceStatus" => call.run(instances::describe_instance_status),
        "GetConsoleOutput" => call.run(instances::get_console_output),
        "DescribeInstanceAttribute" => call.run(instances::describe_instance_attribute),
        "ModifyInstanceAttribute" => call.run(instances::modify_instance_attribute),
        "ModifyInstanceMetadataOptions" => {
            call.run(instance_metadata::modify_instance_metadata_options)
        }
        "AllocateAddress" => call.run(addresses::allocate_address),
        "AssociateAddress" => call.run(addresses::associate_address),
        "DisassociateAddress" => call.run(addresses::disassociate_address),
        "ReleaseAddress" => call.run(addresses::release_address),
        "DescribeAddresses" => call.run(addresses::describe_addresses),
        "DescribeNetworkInterfaces" => call.run(network_interfaces::describe_network_interfaces),
        "AssociateIamInstanceProfile" => {
            call.run(iam_instance_profiles::associate_iam_instance_profile)
        }
        "DescribeIamInstanceProfileAssociations" => {
            call.run(iam_instance_profiles::describe_iam_instance_profile_associations)
        }
        "DisassociateIamInstanceProfile" => {
            call.run(iam_instance_profiles::disassociate_iam_instance_profile)
        }
        "ReplaceIamInstanceProfileAssociation" => {
            call.run(iam_instance_profiles::replace_iam_instance_profile_association)
        }
        "DescribeImages" => call.run(images::describe_images),
        "DescribeImageAttribute" => call.run(images::describe_image_attribute),
        "ModifyImageAttribute" => call.run(images::modify_image_attribute),
        "DeregisterImage" => call.run(images::deregister_image),
        "CreateImage" => call.run(images::create_image),
        "RegisterImage" => call.run(images::register_image),
        "DescribeVolumes" => call.run(volumes::describe_volumes),
        "CreateSnapshot" => call.run(volumes::create_snapshot),
        "DescribeSnapshots" => call.run(volumes::describe_snapshots),
        "DeleteSnapshot" => call.run(volumes::delete_snapshot),
        "CreateTags" => call.run(tags::create_tags),
        "DeleteTags" => call.run(tags::delete_tags),
        "DescribeTags" => call.run(tags::describe_tags),
        other if model::ALL_OPERATIONS.contains(&other) => Err(ApiError::new(
            "UnsupportedOperation",
            format!("The action {other} is valid for EC2 but is not implemented by ec2d yet."),
        )),
        other => Err(ApiError::new(
            "InvalidAction",
            format!("The action {other} is not valid for this web service."),
        )),
    }
}
