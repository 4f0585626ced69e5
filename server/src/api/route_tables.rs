//! Route tables: routes, subnet associations and the main table.

use crate::api::common::{
    apply_tag_specs, bool_str, check_id, ids_or_pages, load, matches, new_id, paginate, tag_set,
    validate_filters,
};
use crate::api::{Ctx, internet_gateways, subnets, vpcs};
use crate::error::ApiError;
use crate::model::{
    AssociateRouteTableRequest, AssociateRouteTableResult, CreateRouteRequest, CreateRouteResult,
    CreateRouteTableRequest, CreateRouteTableResult, DeleteRouteRequest, DeleteRouteTableRequest,
    DescribeRouteTablesRequest, DescribeRouteTablesResult, DisassociateRouteTableRequest,
    ReplaceRouteRequest, ReplaceRouteTableAssociationRequest, ReplaceRouteTableAssociationResult,
    Route, RouteTable, RouteTableAssociation, RouteTableAssociationState,
};

pub const KIND: &str = "route-table";

fn load_table(ctx: &Ctx, id: &str) -> Result<RouteTable, ApiError> {
    load(ctx.tx, KIND, "rtb", "RouteTable", "route table", id)
}

fn tables(ctx: &Ctx) -> Result<Vec<RouteTable>, ApiError> {
    ctx.tx.list(KIND)
}

fn save(ctx: &Ctx, t: &RouteTable) -> Result<(), ApiError> {
    ctx.tx
        .update(KIND, t.route_table_id.as_deref().unwrap_or_default(), t)
}

fn is_main(t: &RouteTable) -> bool {
    t.associations
        .iter()
        .flatten()
        .any(|a| a.main == Some(true))
}

fn associated() -> Option<RouteTableAssociationState> {
    Some(RouteTableAssociationState {
        state: Some("associated".into()),
        status_message: None,
    })
}

fn new_table(ctx: &Ctx, vpc_id: &str, vpc_cidr: &str) -> RouteTable {
    RouteTable {
        associations: Some(Vec::new()),
        propagating_vgws: Some(Vec::new()),
        route_table_id: Some(new_id("rtb")),
        routes: Some(vec![Route {
            destination_cidr_block: Some(vpc_cidr.to_string()),
            gateway_id: Some("local".into()),
            origin: Some("CreateRouteTable".into()),
            state: Some("active".into()),
            ..Default::default()
        }]),
        vpc_id: Some(vpc_id.to_string()),
        owner_id: Some(ctx.account().to_string()),
        tags: None,
    }
}

pub fn create_main_table(ctx: &Ctx, vpc_id: &str, vpc_cidr: &str) -> Result<String, ApiError> {
    let mut t = new_table(ctx, vpc_id, vpc_cidr);
    let id = t.route_table_id.clone().unwrap_or_default();
    t.associations = Some(vec![RouteTableAssociation {
        main: Some(true),
        route_table_association_id: Some(new_id("rtbassoc")),
        route_table_id: Some(id.clone()),
        association_state: associated(),
        ..Default::default()
    }]);
    ctx.tx.insert(KIND, &id, &t)?;
    Ok(id)
}

/// `0.0.0.0/0 → igw` in a VPC's main table, as the default VPC has.
pub fn add_default_route(ctx: &Ctx, vpc_id: &str, igw_id: &str) -> Result<(), ApiError> {
    for mut t in tables(ctx)? {
        if t.vpc_id.as_deref() == Some(vpc_id) && is_main(&t) {
            t.routes.get_or_insert_with(Vec::new).push(Route {
                destination_cidr_block: Some("0.0.0.0/0".into()),
                gateway_id: Some(igw_id.to_string()),
                origin: Some("CreateRoute".into()),
                state: Some("active".into()),
                ..Default::default()
            });
            save(ctx, &t)?;
        }
    }
    Ok(())
}

pub fn count_non_main(ctx: &Ctx, vpc_id: &str) -> Result<usize, ApiError> {
    Ok(tables(ctx)?
        .iter()
        .filter(|t| t.vpc_id.as_deref() == Some(vpc_id) && !is_main(t))
        .count())
}

pub fn delete_main_table(ctx: &Ctx, vpc_id: &str) -> Result<(), ApiError> {
    for t in tables(ctx)? {
        if t.vpc_id.as_deref() == Some(vpc_id) {
            ctx.tx
                .delete(KIND, t.route_table_id.as_deref().unwrap_or_default())?;
        }
    }
    Ok(())
}

pub fn drop_subnet_associations(ctx: &Ctx, subnet_id: &str) -> Result<(), ApiError> {
    for mut t in tables(ctx)? {
        let before = t.associations.as_ref().map_or(0, Vec::len);
        if let Some(a) = t.associations.as_mut() {
            a.retain(|x| x.subnet_id.as_deref() != Some(subnet_id));
        }
        if t.associations.as_ref().map_or(0, Vec::len) != before {
            save(ctx, &t)?;
        }
    }
    Ok(())
}

pub fn create_route_table(
    ctx: &Ctx,
    input: CreateRouteTableRequest,
) -> Result<CreateRouteTableResult, ApiError> {
    let vpc = vpcs::load_vpc(ctx, &input.vpc_id)?;
    let mut t = new_table(
        ctx,
        &input.vpc_id,
        vpc.vpc.cidr_block.as_deref().unwrap_or_default(),
    );
    let id = t.route_table_id.clone().unwrap_or_default();
    ctx.tx.insert(KIND, &id, &t)?;
    apply_tag_specs(
        ctx.tx,
        &id,
        "route-table",
        input.tag_specifications.as_ref(),
    )?;
    t.tags = tag_set(ctx.tx, &id)?;
    Ok(CreateRouteTableResult {
        route_table: Some(t),
        client_token: input.client_token,
    })
}

pub fn delete_route_table(ctx: &Ctx, input: DeleteRouteTableRequest) -> Result<(), ApiError> {
    let t = load_table(ctx, &input.route_table_id)?;
    if t.associations.as_ref().is_some_and(|a| !a.is_empty()) {
        return Err(ApiError::dependency(format!(
            "The routeTable '{}' has dependencies and cannot be deleted.",
            input.route_table_id
        )));
    }
    ctx.tx.delete(KIND, &input.route_table_id)?;
    Ok(())
}

/// The destination a route request names, exactly one of IPv4, IPv6 or prefix list.
fn destination(
    v4: &Option<String>,
    v6: &Option<String>,
    pl: &Option<String>,
) -> Result<(&'static str, String), ApiError> {
    match (v4, v6, pl) {
        (Some(c), None, None) => {
            vpcs::parse_cidr(c, "destinationCidrBlock")?;
            Ok(("v4", c.clone()))
        }
        (None, Some(c), None) => {
            c.parse::<ipnet::Ipv6Net>().map_err(|_| {
                ApiError::invalid_value(format!(
                    "Value ({c}) for parameter destinationIpv6CidrBlock is invalid."
                ))
            })?;
            Ok(("v6", c.clone()))
        }
        (None, None, Some(p)) => Ok(("pl", p.clone())),
        (None, None, None) => Err(ApiError::missing("DestinationCidrBlock")),
        _ => Err(ApiError::combination(
            "Exactly one of destinationCidrBlock, destinationIpv6CidrBlock or destinationPrefixListId must be given.",
        )),
    }
}

fn route_dest_matches(r: &Route, kind: &str, dest: &str) -> bool {
    match kind {
        "v4" => r.destination_cidr_block.as_deref() == Some(dest),
        "v6" => r.destination_ipv6_cidr_block.as_deref() == Some(dest),
        _ => r.destination_prefix_list_id.as_deref() == Some(dest),
    }
}

/// CreateRoute and ReplaceRoute name their target with the same members.
macro_rules! target_of {
    ($input:expr) => {
        Target {
            gateway_id: $input.gateway_id,
            nat_gateway_id: $input.nat_gateway_id,
            instance_id: $input.instance_id,
            network_interface_id: $input.network_interface_id,
            vpc_peering_connection_id: $input.vpc_peering_connection_id,
            transit_gateway_id: $input.transit_gateway_id,
            egress_only_internet_gateway_id: $input.egress_only_internet_gateway_id,
            local_gateway_id: $input.local_gateway_id,
            carrier_gateway_id: $input.carrier_gateway_id,
            vpc_endpoint_id: $input.vpc_endpoint_id,
        }
    };
}

struct Target {
    gateway_id: Option<String>,
    nat_gateway_id: Option<String>,
    instance_id: Option<String>,
    network_interface_id: Option<String>,
    vpc_peering_connection_id: Option<String>,
    transit_gateway_id: Option<String>,
    egress_only_internet_gateway_id: Option<String>,
    local_gateway_id: Option<String>,
    carrier_gateway_id: Option<String>,
    vpc_endpoint_id: Option<String>,
}

fn build_route(
    ctx: &Ctx,
    t: &RouteTable,
    kind: &str,
    dest: &str,
    target: Target,
) -> Result<Route, ApiError> {
    let given = [
        &target.gateway_id,
        &target.nat_gateway_id,
        &target.instance_id,
        &target.network_interface_id,
        &target.vpc_peering_connection_id,
        &target.transit_gateway_id,
        &target.egress_only_internet_gateway_id,
        &target.local_gateway_id,
        &target.carrier_gateway_id,
        &target.vpc_endpoint_id,
    ]
    .iter()
    .filter(|x| x.is_some())
    .count();
    if given != 1 {
        return Err(ApiError::combination(
            "The request must contain exactly one of gatewayId, natGatewayId, instanceId, networkInterfaceId, vpcPeeringConnectionId, transitGatewayId, egressOnlyInternetGatewayId, localGatewayId, carrierGatewayId or vpcEndpointId.",
        ));
    }
    let vpc_id = t.vpc_id.as_deref().unwrap_or_default();
    if let Some(g) = &target.gateway_id
        && g.starts_with("igw-")
    {
        check_id("igw", "InternetGateway", g)?;
        if !internet_gateways::is_attached_to(ctx, g, vpc_id)? {
            return Err(ApiError::invalid_value(format!(
                "route table {} and network gateway {g} belong to different networks",
                t.route_table_id.as_deref().unwrap_or_default()
            )));
        }
    }
    if let Some(i) = &target.instance_id {
        check_id("i", "Instance", i)?;
    }
    let mut r = Route {
        gateway_id: target.gateway_id,
        nat_gateway_id: target.nat_gateway_id,
        instance_id: target.instance_id,
        network_interface_id: target.network_interface_id,
        vpc_peering_connection_id: target.vpc_peering_connection_id,
        transit_gateway_id: target.transit_gateway_id,
        egress_only_internet_gateway_id: target.egress_only_internet_gateway_id,
        local_gateway_id: target.local_gateway_id,
        carrier_gateway_id: target.carrier_gateway_id,
        origin: Some("CreateRoute".into()),
        state: Some("active".into()),
        ..Default::default()
    };
    if target.vpc_endpoint_id.is_some() {
        r.gateway_id = target.vpc_endpoint_id;
    }
    match kind {
        "v4" => r.destination_cidr_block = Some(dest.to_string()),
        "v6" => r.destination_ipv6_cidr_block = Some(dest.to_string()),
        _ => r.destination_prefix_list_id = Some(dest.to_string()),
    }
    Ok(r)
}

pub fn create_route(ctx: &Ctx, input: CreateRouteRequest) -> Result<CreateRouteResult, ApiError> {
    let mut t = load_table(ctx, &input.route_table_id)?;
    let (kind, dest) = destination(
        &input.destination_cidr_block,
        &input.destination_ipv6_cidr_block,
        &input.destination_prefix_list_id,
    )?;
    if t.routes
        .iter()
        .flatten()
        .any(|r| route_dest_matches(r, kind, &dest))
    {
        return Err(ApiError::new(
            "RouteAlreadyExists",
            format!("The route identified by {dest} already exists."),
        ));
    }
    let route = build_route(ctx, &t, kind, &dest, target_of!(input))?;
    t.routes.get_or_insert_with(Vec::new).push(route);
    save(ctx, &t)?;
    Ok(CreateRouteResult {
        r#return: Some(true),
    })
}

fn find_route(t: &RouteTable, kind: &str, dest: &str) -> Result<usize, ApiError> {
    t.routes
        .iter()
        .flatten()
        .position(|r| route_dest_matches(r, kind, dest))
        .ok_or_else(|| {
            ApiError::new(
                "InvalidRoute.NotFound",
                format!(
                    "no route with destination-cidr-block {dest} in route table {}",
                    t.route_table_id.as_deref().unwrap_or_default()
                ),
            )
        })
}

pub fn delete_route(ctx: &Ctx, input: DeleteRouteRequest) -> Result<(), ApiError> {
    let mut t = load_table(ctx, &input.route_table_id)?;
    let (kind, dest) = destination(
        &input.destination_cidr_block,
        &input.destination_ipv6_cidr_block,
        &input.destination_prefix_list_id,
    )?;
    let i = find_route(&t, kind, &dest)?;
    if let Some(routes) = t.routes.as_mut() {
        if routes[i].gateway_id.as_deref() == Some("local") {
            return Err(ApiError::invalid_value(format!(
                "cannot remove local route {dest} in route table {}",
                input.route_table_id
            )));
        }
        routes.remove(i);
    }
    save(ctx, &t)?;
    Ok(())
}

pub fn replace_route(ctx: &Ctx, input: ReplaceRouteRequest) -> Result<(), ApiError> {
    let mut t = load_table(ctx, &input.route_table_id)?;
    let (kind, dest) = destination(
        &input.destination_cidr_block,
        &input.destination_ipv6_cidr_block,
        &input.destination_prefix_list_id,
    )?;
    let i = find_route(&t, kind, &dest)?;
    let mut route = build_route(ctx, &t, kind, &dest, target_of!(input))?;
    route.origin = Some("CreateRoute".into());
    if let Some(routes) = t.routes.as_mut() {
        routes[i] = route;
    }
    save(ctx, &t)?;
    Ok(())
}

pub fn associate_route_table(
    ctx: &Ctx,
    input: AssociateRouteTableRequest,
) -> Result<AssociateRouteTableResult, ApiError> {
    let mut t = load_table(ctx, &input.route_table_id)?;
    let vpc_id = t.vpc_id.clone().unwrap_or_default();
    let assoc_id = new_id("rtbassoc");
    let mut assoc = RouteTableAssociation {
        main: Some(false),
        route_table_association_id: Some(assoc_id.clone()),
        route_table_id: Some(input.route_table_id.clone()),
        association_state: associated(),
        ..Default::default()
    };
    match (&input.subnet_id, &input.gateway_id) {
        (Some(subnet_id), None) => {
            let s = subnets::load_subnet(ctx, subnet_id)?;
            if s.vpc_id.as_deref() != Some(vpc_id.as_str()) {
                return Err(ApiError::invalid_value(format!(
                    "Route table {} and subnet {subnet_id} belong to different networks",
                    input.route_table_id
                )));
            }
            let taken = tables(ctx)?.iter().any(|x| {
                x.associations
                    .iter()
                    .flatten()
                    .any(|a| a.subnet_id.as_deref() == Some(subnet_id.as_str()))
            });
            if taken {
                return Err(ApiError::new(
                    "Resource.AlreadyAssociated",
                    format!(
                        "the specified association for route table {} conflicts with an existing association",
                        input.route_table_id
                    ),
                ));
            }
            assoc.subnet_id = Some(subnet_id.clone());
        }
        (None, Some(gw)) => {
            check_id("igw", "InternetGateway", gw)?;
            if !internet_gateways::is_attached_to(ctx, gw, &vpc_id)? {
                return Err(ApiError::invalid_value(format!(
                    "Route table {} and gateway {gw} belong to different networks",
                    input.route_table_id
                )));
            }
            assoc.gateway_id = Some(gw.clone());
        }
        (None, None) => return Err(ApiError::missing("SubnetId")),
        _ => {
            return Err(ApiError::combination(
                "Only one of subnetId or gatewayId may be given.",
            ));
        }
    }
    t.associations.get_or_insert_with(Vec::new).push(assoc);
    save(ctx, &t)?;
    Ok(AssociateRouteTableResult {
        association_id: Some(assoc_id),
        association_state: associated(),
    })
}

/// Finds the table holding an association id.
fn find_association(ctx: &Ctx, assoc_id: &str) -> Result<(RouteTable, usize), ApiError> {
    check_id("rtbassoc", "Association", assoc_id)?;
    for t in tables(ctx)? {
        if let Some(i) = t
            .associations
            .iter()
            .flatten()
            .position(|a| a.route_table_association_id.as_deref() == Some(assoc_id))
        {
            return Ok((t, i));
        }
    }
    Err(ApiError::new(
        "InvalidAssociationID.NotFound",
        format!("The association ID '{assoc_id}' does not exist"),
    ))
}

pub fn disassociate_route_table(
    ctx: &Ctx,
    input: DisassociateRouteTableRequest,
) -> Result<(), ApiError> {
    let (mut t, i) = find_association(ctx, &input.association_id)?;
    if let Some(list) = t.associations.as_mut() {
        if list[i].main == Some(true) {
            return Err(ApiError::invalid_value(format!(
                "cannot disassociate the main route table association {}",
                input.association_id
            )));
        }
        list.remove(i);
    }
    save(ctx, &t)?;
    Ok(())
}

pub fn replace_route_table_association(
    ctx: &Ctx,
    input: ReplaceRouteTableAssociationRequest,
) -> Result<ReplaceRouteTableAssociationResult, ApiError> {
    let (mut old, i) = find_association(ctx, &input.association_id)?;
    let mut new = load_table(ctx, &input.route_table_id)?;
    if new.vpc_id != old.vpc_id {
        return Err(ApiError::invalid_value(format!(
            "Route table {} belongs to a different network",
            input.route_table_id
        )));
    }
    let mut assoc = match old.associations.as_mut() {
        Some(list) => list.remove(i),
        None => return Err(ApiError::internal("association vanished")),
    };
    let new_id_s = new_id("rtbassoc");
    assoc.route_table_association_id = Some(new_id_s.clone());
    assoc.route_table_id = Some(input.route_table_id.clone());
    if old.route_table_id == new.route_table_id {
        old.associations.get_or_insert_with(Vec::new).push(assoc);
        save(ctx, &old)?;
    } else {
        new.associations.get_or_insert_with(Vec::new).push(assoc);
        save(ctx, &old)?;
        save(ctx, &new)?;
    }
    Ok(ReplaceRouteTableAssociationResult {
        new_association_id: Some(new_id_s),
        association_state: associated(),
    })
}

const FILTERS: &[&str] = &[
    "association.gateway-id",
    "association.route-table-association-id",
    "association.route-table-id",
    "association.subnet-id",
    "association.main",
    "owner-id",
    "route-table-id",
    "route.destination-cidr-block",
    "route.destination-ipv6-cidr-block",
    "route.destination-prefix-list-id",
    "route.egress-only-internet-gateway-id",
    "route.gateway-id",
    "route.instance-id",
    "route.nat-gateway-id",
    "route.transit-gateway-id",
    "route.origin",
    "route.state",
    "route.vpc-peering-connection-id",
    "vpc-id",
];

pub fn describe_route_tables(
    ctx: &Ctx,
    input: DescribeRouteTablesRequest,
) -> Result<DescribeRouteTablesResult, ApiError> {
    let filters = input.filters.unwrap_or_default();
    validate_filters(&filters, FILTERS)?;
    ids_or_pages(&input.route_table_ids, input.max_results, "routeTableIds")?;
    let list = match &input.route_table_ids {
        Some(ids) if !ids.is_empty() => ids
            .iter()
            .map(|id| load_table(ctx, id))
            .collect::<Result<Vec<_>, _>>()?,
        _ => tables(ctx)?,
    };
    let mut out = Vec::new();
    for mut t in list {
        let id = t.route_table_id.clone().unwrap_or_default();
        let tags = ctx.tx.tags(&id)?;
        let assocs = t.associations.clone().unwrap_or_default();
        let routes = t.routes.clone().unwrap_or_default();
        let values = |f: &str| {
            let from_assoc = |g: fn(&RouteTableAssociation) -> Option<String>| {
                assocs.iter().filter_map(g).collect::<Vec<_>>()
            };
            let from_route =
                |g: fn(&Route) -> Option<String>| routes.iter().filter_map(g).collect::<Vec<_>>();
            Some(match f {
                "association.gateway-id" => from_assoc(|a| a.gateway_id.clone()),
                "association.route-table-association-id" => {
                    from_assoc(|a| a.route_table_association_id.clone())
                }
                "association.route-table-id" => from_assoc(|a| a.route_table_id.clone()),
                "association.subnet-id" => from_assoc(|a| a.subnet_id.clone()),
                "association.main" => from_assoc(|a| Some(bool_str(a.main))),
                "owner-id" => t.owner_id.iter().cloned().collect(),
                "route-table-id" => vec![id.clone()],
                "route.destination-cidr-block" => from_route(|r| r.destination_cidr_block.clone()),
                "route.destination-ipv6-cidr-block" => {
                    from_route(|r| r.destination_ipv6_cidr_block.clone())
                }
                "route.destination-prefix-list-id" => {
                    from_route(|r| r.destination_prefix_list_id.clone())
                }
                "route.egress-only-internet-gateway-id" => {
                    from_route(|r| r.egress_only_internet_gateway_id.clone())
                }
                "route.gateway-id" => from_route(|r| r.gateway_id.clone()),
                "route.instance-id" => from_route(|r| r.instance_id.clone()),
                "route.nat-gateway-id" => from_route(|r| r.nat_gateway_id.clone()),
                "route.transit-gateway-id" => from_route(|r| r.transit_gateway_id.clone()),
                "route.origin" => from_route(|r| r.origin.clone()),
                "route.state" => from_route(|r| r.state.clone()),
                "route.vpc-peering-connection-id" => {
                    from_route(|r| r.vpc_peering_connection_id.clone())
                }
                "vpc-id" => t.vpc_id.iter().cloned().collect(),
                _ => Vec::new(),
            })
        };
        if matches(&filters, &tags, &values) {
            t.tags = (!tags.is_empty()).then_some(tags);
            out.push(t);
        }
    }
    let (page, next) = paginate(out, input.max_results, input.next_token.as_deref())?;
    Ok(DescribeRouteTablesResult {
        route_tables: Some(page),
        next_token: next,
    })
}
