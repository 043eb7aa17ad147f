//! The people service: the seed's Titan example done right. Every input is
//! validated before anything is written; store calls run off the reactor.

use std::sync::Arc;

use bytes::Bytes;
use zrpc_async::Runtime;
use zrpc_proto::people::{
    Department, Edge, EdgeKind, ImportSummary, ListPeopleRequest, MembersRequest, Organization,
    Person, people_server,
};
use zrpc_proto::{CallContext, Code, Router, Sink, Status, Streaming};

use crate::store::{DEPARTMENT, ORGANIZATION, PERSON, Store, StoreError};

/// Most people one ImportPeople call may carry.
pub const MAX_IMPORT: usize = 100_000;

/// The People service over a [`Store`].
pub struct PeopleService<R: Runtime> {
    store: Arc<dyn Store>,
    rt: R,
}

fn invalid(msg: impl Into<String>) -> Status {
    Status::new(Code::InvalidArgument, msg)
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound(m) => Status::new(Code::NotFound, m),
        StoreError::Invalid(m) => invalid(m),
        StoreError::Backend(m) => Status::new(Code::Internal, format!("store failure: {m}")),
    }
}

fn valid_email(e: &str) -> bool {
    let mut parts = e.split('@');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(local), Some(domain), None) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        _ => false,
    }
}

fn valid_url(u: &str) -> bool {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty() && !u.chars().any(|c| c.is_whitespace() || c.is_control())
    })
}

/// Checks a person to create; the error names the field.
pub fn validate_person(p: &Person) -> Result<(), Status> {
    if p.name.trim().is_empty() {
        return Err(invalid("name: must not be empty"));
    }
    if !p.email.is_empty() && !valid_email(&p.email) {
        return Err(invalid(format!(
            "email: {:?} is not an email address",
            p.email
        )));
    }
    if !p.url.is_empty() && !valid_url(&p.url) {
        return Err(invalid(format!("url: {:?} is not an http(s) URL", p.url)));
    }
    Ok(())
}

fn validate_name(field: &str, name: &str) -> Result<(), Status> {
    if name.trim().is_empty() {
        return Err(invalid(format!("{field}: must not be empty")));
    }
    Ok(())
}

impl<R: Runtime> PeopleService<R> {
    /// A service over `store`, running store calls on `rt`'s blocking pool.
    pub fn new(store: Arc<dyn Store>, rt: R) -> Self {
        Self { store, rt }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        self.rt
            .spawn_blocking(move || f(&*store))
            .await
            .map_err(store_status)
    }

    /// Validates and stores one person.
    pub async fn store_person(&self, p: Person) -> Result<Person, Status> {
        validate_person(&p)?;
        let mut stored = self.blocking(move |s| s.create_people(&[p])).await?;
        stored
            .pop()
            .ok_or_else(|| Status::new(Code::Internal, "store returned nothing"))
    }
}

impl<R: Runtime> people_server::People for PeopleService<R> {
    async fn create_person(&self, _ctx: CallContext, request: Person) -> Result<Person, Status> {
        self.store_person(request).await
    }

    async fn create_people(
        &self,
        _ctx: CallContext,
        mut requests: Streaming<Person>,
        mut responses: Sink<Person>,
    ) -> Result<(), Status> {
        while let Some(p) = requests.message().await? {
            let stored = self.store_person(p).await?;
            responses.send(&stored).await?;
        }
        Ok(())
    }

    async fn import_people(
        &self,
        _ctx: CallContext,
        mut requests: Streaming<Person>,
    ) -> Result<ImportSummary, Status> {
        let mut people = Vec::new();
        while let Some(p) = requests.message().await? {
            if people.len() == MAX_IMPORT {
                return Err(Status::new(
                    Code::ResourceExhausted,
                    format!("at most {MAX_IMPORT} people per import"),
                ));
            }
            validate_person(&p)
                .map_err(|e| invalid(format!("person {}: {}", people.len(), e.message())))?;
            people.push(p);
        }
        let stored = self.blocking(move |s| s.create_people(&people)).await?;
        Ok(ImportSummary {
            created: stored.len() as u32,
            rejected: 0,
            ids: stored.iter().map(|p| p.id).collect(),
        })
    }

    async fn list_people(
        &self,
        _ctx: CallContext,
        request: ListPeopleRequest,
        mut responses: Sink<Person>,
    ) -> Result<(), Status> {
        let people = self
            .blocking(move |s| s.list_people(&request.name_contains, request.limit))
            .await?;
        for p in &people {
            responses.send(p).await?;
        }
        Ok(())
    }

    async fn create_organization(
        &self,
        _ctx: CallContext,
        request: Organization,
    ) -> Result<Organization, Status> {
        validate_name("name", &request.name)?;
        let name = request.name.clone();
        let id = self
            .blocking(move |s| s.create_vertex(ORGANIZATION, &name))
            .await?;
        Ok(Organization {
            id,
            label: ORGANIZATION.into(),
            ..request
        })
    }

    async fn create_department(
        &self,
        _ctx: CallContext,
        request: Department,
    ) -> Result<Department, Status> {
        validate_name("name", &request.name)?;
        let name = request.name.clone();
        let id = self
            .blocking(move |s| s.create_vertex(DEPARTMENT, &name))
            .await?;
        Ok(Department {
            id,
            label: DEPARTMENT.into(),
            ..request
        })
    }

    async fn link(&self, _ctx: CallContext, request: Edge) -> Result<Edge, Status> {
        let kind = EdgeKind::try_from(request.kind)
            .map_err(|_| invalid(format!("kind: unknown edge kind {}", request.kind)))?;
        let (from_label, to_label) = match kind {
            EdgeKind::WorksFor => (PERSON, ORGANIZATION),
            EdgeKind::MemberOf => (PERSON, DEPARTMENT),
            EdgeKind::BelongsTo => (DEPARTMENT, ORGANIZATION),
        };
        let (from, to) = (request.from_id, request.to_id);
        let id = self
            .blocking(move |s| {
                for (field, id, want) in [("from_id", from, from_label), ("to_id", to, to_label)] {
                    match s.label_of(id)? {
                        None => {
                            return Err(StoreError::NotFound(format!("{field}: no vertex {id}")));
                        }
                        Some(l) if l != want => {
                            return Err(StoreError::Invalid(format!(
                                "{field}: vertex {id} is a {l}; {} needs a {want} there",
                                kind.as_str_name()
                            )));
                        }
                        Some(_) => {}
                    }
                }
                s.link(kind, from, to)
            })
            .await?;
        Ok(Edge { id, ..request })
    }

    async fn members(
        &self,
        _ctx: CallContext,
        request: MembersRequest,
        mut responses: Sink<Person>,
    ) -> Result<(), Status> {
        let v = request.vertex_id;
        let people = self
            .blocking(move |s| match s.label_of(v)?.as_deref() {
                None => Err(StoreError::NotFound(format!("vertex_id: no vertex {v}"))),
                Some(DEPARTMENT) => s.people_linked_to(EdgeKind::MemberOf, v),
                Some(ORGANIZATION) => s.people_linked_to(EdgeKind::WorksFor, v),
                Some(l) => Err(StoreError::Invalid(format!(
                    "vertex_id: vertex {v} is a {l}; members needs a department or an organization"
                ))),
            })
            .await?;
        for p in &people {
            responses.send(p).await?;
        }
        Ok(())
    }
}

/// The seed's Titan call in legacy mode: `create_person` (and
/// `dispatch.create_person`) with a serialized `Person` stores it and
/// streams back the stored Person (binary), then the call ends with a normal
/// close.
pub fn register_legacy<R: Runtime>(router: Router, service: Arc<PeopleService<R>>) -> Router {
    let create = {
        let service = service.clone();
        move |ctx: CallContext, payload: Bytes, mut sink: zrpc_async::ResponseSink| {
            let service = service.clone();
            async move {
                let routed = matches!(ctx.method(), "create_person" | "dispatch.create_person");
                if !routed {
                    return Err(Status::new(
                        Code::Unimplemented,
                        format!("no legacy method {}", ctx.method()),
                    ));
                }
                let person: Person = zrpc_proto::decode(payload)?;
                let stored = service.store_person(person).await?;
                sink.send(zrpc_proto::encode(&stored)).await
            }
        }
    };
    router
        .server_streaming("create_person", create.clone())
        .server_streaming("dispatch", create)
}
