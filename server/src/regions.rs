//! The regions and availability zones ec2d serves, with their real names and zone ids.

pub struct Region {
    pub name: &'static str,
    /// Zone-id prefix, e.g. `use1` in `use1-az1`.
    pub zone_id_prefix: &'static str,
    /// Zone letters, in the order EC2 lists them.
    pub zones: &'static [char],
    pub opt_in: bool,
}

pub const REGIONS: &[Region] = &[
    Region {
        name: "us-east-1",
        zone_id_prefix: "use1",
        zones: &['a', 'b', 'c', 'd', 'e', 'f'],
        opt_in: false,
    },
    Region {
        name: "us-east-2",
        zone_id_prefix: "use2",
        zones: &['a', 'b', 'c'],
        opt_in: false,
    },
    Region {
        name: "us-west-1",
        zone_id_prefix: "usw1",
        zones: &['a', 'b', 'c'],
        opt_in: false,
    },
    Region {
        name: "us-west-2",
        zone_id_prefix: "usw2",
        zones: &['a', 'b', 'c', 'd'],
        opt_in: false,
    },
    Region {
        name: "ca-central-1",
        zone_id_prefix: "cac1",
        zones: &['a', 'b', 'd'],
        opt_in: false,
    },
    Region {
        name: "sa-east-1",
        zone_id_prefix: "sae1",
        zones: &['a', 'b', 'c'],
        opt_in: false,
    },
    Region {
        name: "eu-west-1",
        zone_id_prefix: "euw1",
        zones: &['a', 'b', 'c'],
        opt_in: false,
    },
    Region {
        name: "eu-west-2",
        zone_id_prefix: "euw2",
        zones: &['a', 'b', 'c'],
        opt_in: false,
    },
    Region {
        name: "eu-west-3",
        zone_id_prefix: "euw3",
        zones: &['a', 'b', 'c'],
        opt_in: false,
    },
    Region {
        name: "eu-central-1",
        zone_id_prefix: "euc1",
        zones: &['a', 'b', 'c'],
        opt_in: false,
    },
    Region {
        name: "eu-north-1",
        zone_id_prefix: "eun1",
        zones: &['a', 'b', 'c'],
        opt_in: false,
    },
    Region {
        name: "ap-south-1",
        zone_id_prefix: "aps1",
        zones: &['a', 'b', 'c'],
        opt_in: false,
    },
    Region {
        name: "ap-northeast-1",
        zone_id_prefix: "apne1",
        zones: &['a', 'c', 'd'],
        opt_in: false,
    },
    Region {
        name: "ap-northeast-2",
        zone_id_prefix: "apne2",
        zones: &['a', 'b', 'c', 'd'],
        opt_in: false,
    },
    Region {
        name: "ap-northeast-3",
        zone_id_prefix: "apne3",
        zones: &['a', 'b', 'c'],
        opt_in: false,
    },
    Region {
        name: "ap-southeast-1",
        zone_id_prefix: "apse1",
        zones: &['a', 'b', 'c'],
        opt_in: false,
    },
    Region {
        name: "ap-southeast-2",
        zone_id_prefix: "apse2",
        zones: &['a', 'b', 'c'],
        opt_in: false,
    },
];

pub fn find(name: &str) -> Option<&'static Region> {
    REGIONS.iter().find(|r| r.name == name)
}

pub fn is_known(name: &str) -> bool {
    find(name).is_some()
}

pub struct Zone {
    pub name: String,
    pub id: String,
}

impl Region {
    pub fn endpoint(&self) -> String {
        format!("ec2.{}.amazonaws.com", self.name)
    }

    pub fn zones(&self) -> Vec<Zone> {
        self.zones
            .iter()
            .enumerate()
            .map(|(i, l)| Zone {
                name: format!("{}{l}", self.name),
                id: format!("{}-az{}", self.zone_id_prefix, i + 1),
            })
            .collect()
    }
}
