//! What a libp2p stream's protocol id says about its bytes: the category and the kind of its
//! data (protocols.md §2). Relay streams stay `libp2p` until their RPCs are split field by field.

use crate::account::record::Category;

/// Gossipsub ids a Waku relay speaks.
pub const RELAY: &[&str] = &[
    "/vac/waku/relay/2.0.0",
    "/meshsub/1.3.0",
    "/meshsub/1.2.0",
    "/meshsub/1.1.0",
    "/meshsub/1.0.0",
    "/floodsub/1.0.0",
];

/// Waku's request/response and sync services.
pub const WAKU_SERVICES: &[&str] = &[
    "/vac/waku/store-query/3.0.0",
    "/vac/waku/store/2.0.0-beta4",
    "/vac/waku/filter-subscribe/2.0.0-beta1",
    "/vac/waku/filter-push/2.0.0-beta1",
    "/vac/waku/lightpush/3.0.0",
    "/vac/waku/lightpush/2.0.0-beta1",
    "/vac/waku/peer-exchange/2.0.0-alpha1",
    "/vac/waku/metadata/1.0.0",
    "/vac/waku/rendezvous/1.0.0",
    "/rendezvous/1.0.0",
    "/vac/waku/reconciliation/1.0.0",
    "/vac/waku/transfer/1.0.0",
];

/// Category and data kind of a stream speaking `id`.
pub fn classify(id: &str) -> (Category, &'static str) {
    if RELAY.contains(&id) {
        (Category::Libp2p, "unparsed")
    } else if WAKU_SERVICES.contains(&id) {
        (Category::WakuService, "data")
    } else {
        (Category::Libp2p, "data")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_libp2p() {
        assert_eq!(
            classify("/vac/waku/store-query/3.0.0").0,
            Category::WakuService
        );
        assert_eq!(classify("/ipfs/id/1.0.0"), (Category::Libp2p, "data"));
        assert_eq!(
            classify("/vac/waku/relay/2.0.0"),
            (Category::Libp2p, "unparsed")
        );
    }
}
