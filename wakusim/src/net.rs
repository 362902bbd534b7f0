//! The simulation's network: a hub namespace holding a bridge, and one namespace per node with
//! a veth whose other end is on the bridge. Everything lives in namespaces the run creates (the
//! host's own network sees nothing) and is deleted when [`Net`] is dropped, or by its
//! [`Janitor`] when wakusim is killed.

use std::net::Ipv4Addr;

use traffic::netns::{Namespaces, ip};

use crate::janitor::Janitor;

/// Names and addresses of one node's place in the network.
#[derive(Clone, Debug)]
pub struct Place {
    /// The node's namespace.
    pub netns: String,
    /// The veth end on the bridge (in the hub namespace), where the node is captured.
    pub hub_veth: String,
    /// The node's address.
    pub addr: Ipv4Addr,
}

/// A bridge in a hub namespace and a namespace per node; dropping it removes them all.
pub struct Net {
    /// The hub namespace (bridge and the captured veth ends).
    pub hub: String,
    /// Each node's place, by index.
    pub places: Vec<Place>,
    /// Dropped before the janitor (fields drop in order), which then finds nothing left.
    _namespaces: Namespaces,
    _janitor: Janitor,
}

/// Name of the bridge inside the hub.
const BRIDGE: &str = "wsbr0";

impl Net {
    /// Creates the network for `nodes` nodes; `tag` keeps concurrent runs apart, in names and
    /// in addresses (10.<tag / 256 % 256>.<tag % 256>.<node + 1>), so that the probe, which
    /// sees every namespace, tells their nodes apart.
    pub fn create(tag: u32, nodes: usize) -> anyhow::Result<Net> {
        let hub = format!("wsim{tag}-hub");
        let [_, _, high, low] = tag.to_be_bytes();
        let places: Vec<Place> = (0..nodes)
            .map(|i| Place {
                netns: format!("wsim{tag}-n{i}"),
                hub_veth: format!("ws{tag}n{i}"),
                addr: Ipv4Addr::new(10, high, low, u8::try_from(i + 1).unwrap_or(u8::MAX)),
            })
            .collect();
        let mut names = vec![hub.as_str()];
        names.extend(places.iter().map(|p| p.netns.as_str()));
        let janitor = Janitor::start(&names)?;
        let namespaces = Namespaces::create(&names)?;
        ip(&["-n", &hub, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", BRIDGE, "up"])?;
        for p in &places {
            ip(&[
                "link",
                "add",
                &p.hub_veth,
                "netns",
                &hub,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &p.netns,
            ])?;
            ip(&["-n", &hub, "link", "set", &p.hub_veth, "master", BRIDGE])?;
            ip(&["-n", &hub, "link", "set", &p.hub_veth, "up"])?;
            let cidr = format!("{}/24", p.addr);
            ip(&["-n", &p.netns, "addr", "add", &cidr, "dev", "eth0"])?;
            // One segment per packet, as on a wire: the probe samples each packet's first 2 KiB
            // at the socket, where segmentation offload would hand it packets of up to 64 KiB.
            ip(&["-n", &p.netns, "link", "set", "eth0", "gso_max_segs", "1"])?;
            ip(&["-n", &p.netns, "link", "set", "eth0", "up"])?;
        }
        Ok(Net {
            hub,
            places,
            _namespaces: namespaces,
            _janitor: janitor,
        })
    }
}
