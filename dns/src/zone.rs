//! The data layer: a hickory [`ZoneHandler`] serving the cluster domain
//! (or one reverse zone) from the current [`ClusterView`] snapshot.
//!
//! It does little itself: [`crate::records`] decides what a name holds, and
//! hickory's `Catalog` turns the outcome into a response (AA flag, SOA in
//! the authority section for NXDOMAIN and NODATA, NS for SOA answers).

use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, Name, RecordType, TSigResponseContext};
use hickory_server::server::{Request, RequestInfo};
use hickory_server::zone_handler::{
    AuthLookup, AxfrPolicy, LookupControlFlow, LookupError, LookupOptions, LookupRecords,
    ZoneHandler, ZoneType,
};

use crate::records::{self, Lookup, RecordSettings, ReverseZone};
use crate::view::ViewHandle;

/// Which zone a [`ClusterZone`] serves.
#[derive(Debug, Clone)]
pub enum ZoneKind {
    /// The cluster domain (`cluster.local`).
    Cluster,
    /// A reverse zone cut from a configured CIDR.
    Reverse(ReverseZone),
}

/// Authoritative zone handler over the live cluster view. Every lookup
/// loads the current snapshot, so a published view is answered from the
/// next query on.
pub struct ClusterZone {
    origin: LowerName,
    kind: ZoneKind,
    view: ViewHandle,
    settings: Arc<RecordSettings>,
}

impl ClusterZone {
    /// The handler for the cluster domain in `settings`.
    pub fn cluster(view: ViewHandle, settings: Arc<RecordSettings>) -> Self {
        Self {
            origin: LowerName::new(settings.domain()),
            kind: ZoneKind::Cluster,
            view,
            settings,
        }
    }

    /// The handler for one reverse zone.
    pub fn reverse(zone: ReverseZone, view: ViewHandle, settings: Arc<RecordSettings>) -> Self {
        Self {
            origin: LowerName::new(&zone.origin),
            kind: ZoneKind::Reverse(zone),
            view,
            settings,
        }
    }

    /// What the zone holds for `name`/`rtype` right now.
    pub fn resolve(&self, name: &Name, rtype: RecordType) -> Lookup {
        let view = self.view.load();
        match &self.kind {
            ZoneKind::Cluster => records::cluster_lookup(&view, &self.settings, name, rtype),
            ZoneKind::Reverse(zone) => {
                records::reverse_lookup(&view, &self.settings, zone, name, rtype)
            }
        }
    }
}

fn to_control_flow(lookup: Lookup) -> LookupControlFlow<AuthLookup> {
    LookupControlFlow::Break(match lookup {
        Lookup::Found {
            answers,
            additionals,
        } => Ok(AuthLookup::answers(
            LookupRecords::Section(answers),
            (!additionals.is_empty()).then_some(LookupRecords::Section(additionals)),
        )),
        // The Catalog answers NOERROR with the zone's SOA for this one…
        Lookup::NoData => Err(LookupError::NameExists),
        // …and NXDOMAIN with the SOA for this one.
        Lookup::NxDomain => Err(LookupError::from(ResponseCode::NXDomain)),
    })
}

#[async_trait::async_trait]
impl ZoneHandler for ClusterZone {
    fn zone_type(&self) -> ZoneType {
        ZoneType::Primary
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        AxfrPolicy::Deny
    }

    fn origin(&self) -> &LowerName {
        &self.origin
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        request_info: Option<&RequestInfo<'_>>,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        // Answer with the client's spelling of the name when we have it.
        let original = request_info
            .map(|info| info.query.original().name())
            .filter(|n| LowerName::new(n) == *name)
            .cloned()
            .unwrap_or_else(|| Name::from(name.clone()));
        to_control_flow(self.resolve(&original, rtype))
    }

    async fn search(
        &self,
        request: &Request,
        lookup_options: LookupOptions,
    ) -> (LookupControlFlow<AuthLookup>, Option<TSigResponseContext>) {
        let info = match request.request_info() {
            Ok(info) => info,
            Err(e) => return (LookupControlFlow::Break(Err(e)), None),
        };
        let flow = self
            .lookup(
                info.query.name(),
                info.query.query_type(),
                Some(&info),
                lookup_options,
            )
            .await;
        (flow, None)
    }

    async fn nsec_records(
        &self,
        _name: &LowerName,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        // The zone is not signed: there are no NSEC records to give.
        LookupControlFlow::Continue(Ok(AuthLookup::default()))
    }
}
