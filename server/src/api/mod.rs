//! EC2 actions, one module per resource family, and the machinery they share.

pub mod common;
pub mod instance_types;
pub mod internet_gateways;
pub mod key_pairs;
pub mod regions;
pub mod route_tables;
pub mod security_groups;
pub mod subnets;
pub mod tags;
pub mod vpcs;

use std::collections::HashSet;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::model;
use crate::protocol::query::{FromQuery, QueryNode};
use crate::protocol::xml::{self, ToXml};
use crate::store::{Store, Tx};

/// What a handler sees: the caller's scoped transaction.
pub struct Ctx<'a, 'c> {
    pub tx: &'a Tx<'c>,
}

impl Ctx<'_, '_> {
    pub fn account(&self) -> &str {
        &self.tx.account
    }

    pub fn region(&self) -> &str {
        &self.tx.region
    }
}

/// Shared API state.
pub struct Api {
    pub store: Store,
    /// Scopes whose defaults (default VPC and friends) are known to exist, so the common
    /// path never writes.
    seeded: Mutex<HashSet<(String, String)>>,
}

/// A response ready for the wire.
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Api {
    pub fn new(store: Store) -> Self {
        Api {
            store,
            seeded: Mutex::new(HashSet::new()),
        }
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
        self.store.transaction(account, region, |tx| {
            if tx.first_use()? {
                vpcs::create_default_vpc(&Ctx { tx })?;
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
        self.api.store.transaction(self.account, self.region, |tx| {
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
            let output = handler(&Ctx { tx }, input)?;
            let body = xml::response(action, request_id, &output);
            if let (Some(token), Some(fp)) = (&client_token, &fingerprint) {
                tx.remember(action, token, fp, &body)?;
            }
            Ok(body)
        })
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
