//! The people service: the seed's Titan example done right. Every input is
//! validated before anything is written; store calls run off the reactor.

use std::sync::Arc;

use crate::proto::people::{
    Department, Edge, EdgeKind, ImportSummary, ListPeopleRequest, MembersRequest, Organization,
    Person, people_server,
};
use bytes::Bytes;
use zrpc_async::Runtime;
use zrpc_proto::{CallContext, Code, Router, Sink, Status, Streaming};

use crate::feed::{Feed, Found};
use crate::store::{DEPARTMENT, ORGANIZATION, PERSON, Store, StoreError};

/// Most people one ImportPeople call may carry.
pub const MAX_IMPORT: usize = 10_000;
/// Most bytes of people one ImportPeople call may carry (it holds them all
/// until it stores them in one transaction).
pub const MAX_IMPORT_BYTES: usize = 4 * 1024 * 1024;
/// Rows a streaming read takes from the store at a time: what one
/// ListPeople or Members call holds, whatever the result's size.
pub const PAGE: u32 = 256;
/// Longest name (person, organization, department), in bytes.
pub const MAX_NAME: usize = 256;
/// Longest email address, in bytes (RFC 5321).
pub const MAX_EMAIL: usize = 254;
/// Longest URL, in bytes.
pub const MAX_URL: usize = 2048;

/// The People service over a [`Store`].
pub struct PeopleService<R: Runtime> {
    store: Arc<dyn Store>,
    rt: R,
    /// The people created (here, or through any instance when the store is
    /// shared), for WatchPeople streams to filter in memory: a creation
    /// costs no store query per watcher.
    feed: Arc<Feed>,
    /// The store fills the feed with every instance's creations
    /// ([`Store::watch_created`]); otherwise this service pushes its own.
    shared_feed: bool,
}

/// How many rows a request's `limit` asks for (0: no limit).
fn rows_wanted(limit: u32) -> u64 {
    if limit == 0 { u64::MAX } else { limit as u64 }
}

/// Bytes of the resume cursor of ListPeople, Members and WatchPeople: the
/// last id sent (`i32`) and the rows still wanted (`u64`), big-endian.
pub const CURSOR_LEN: usize = 12;

/// The resume cursor after sending the person with id `after`, `left`
/// rows still wanted.
fn cursor(after: i32, left: u64) -> Bytes {
    let mut c = [0u8; CURSOR_LEN];
    c[..4].copy_from_slice(&after.to_be_bytes());
    c[4..].copy_from_slice(&left.to_be_bytes());
    Bytes::copy_from_slice(&c)
}

/// Where a streaming read starts: the request's `after_id` and row count,
/// or the resume cursor of a resumed call (which comes from the caller, so
/// it is checked like the request). The stream's resume point before its
/// first message goes out with the response headers, so a stream that
/// waits long for its first row can be resumed too.
fn start<M: zrpc_proto::Message>(
    ctx: &CallContext,
    out: &mut Sink<M>,
    after_id: i32,
    limit: u32,
) -> Result<(i32, u64), Status> {
    let (after, left) = match ctx.resume_cursor() {
        None => (after_id, rows_wanted(limit)),
        Some(c) => {
            let c: &[u8; CURSOR_LEN] = c[..].try_into().map_err(|_| {
                invalid(format!(
                    "resume cursor: {} bytes, not {CURSOR_LEN}",
                    c.len()
                ))
            })?;
            let after = i32::from_be_bytes([c[0], c[1], c[2], c[3]]);
            let left = u64::from_be_bytes(c[4..].try_into().unwrap_or_default());
            (after, left)
        }
    };
    out.start_at(cursor(after, left))?;
    Ok((after, left))
}

fn invalid(msg: impl Into<String>) -> Status {
    Status::new(Code::InvalidArgument, msg)
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound(m) => Status::new(Code::NotFound, m),
        StoreError::Invalid(m) => invalid(m),
        StoreError::Unavailable(m) => {
            Status::new(Code::Unavailable, format!("store unavailable: {m}"))
        }
        // Retrying is not known to be safe: UNAVAILABLE would say it is.
        StoreError::OutcomeUnknown(m) => Status::new(
            Code::Unknown,
            format!(
                "the write's outcome is unknown (the database connection was lost while committing it): {m}"
            ),
        ),
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

fn validate_len(field: &str, value: &str, max: usize) -> Result<(), Status> {
    // PostgreSQL's text cannot hold NUL; refused the same on every store.
    if value.contains('\0') {
        return Err(invalid(format!("{field}: must not contain NUL characters")));
    }
    if value.len() > max {
        return Err(invalid(format!(
            "{field}: at most {max} bytes (got {})",
            value.len()
        )));
    }
    Ok(())
}

/// Checks a person to create; the error names the field.
pub fn validate_person(p: &Person) -> Result<(), Status> {
    validate_name("name", &p.name)?;
    validate_len("email", &p.email, MAX_EMAIL)?;
    validate_len("url", &p.url, MAX_URL)?;
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
    validate_len(field, name, MAX_NAME)
}

impl<R: Runtime> PeopleService<R> {
    /// A service over `store`, running store calls on `rt`'s blocking pool.
    pub fn new(store: Arc<dyn Store>, rt: R) -> Self {
        let feed = Arc::new(Feed::default());
        let to = feed.clone();
        let shared_feed = store.watch_created(Box::new(move |people| to.push(&people)));
        Self {
            store,
            rt,
            feed,
            shared_feed,
        }
    }

    /// People this instance just stored reach its watchers: through the
    /// feed at once, or through the store's own delivery when it is shared
    /// (which keeps every instance's creations in one order).
    fn stored(&self, people: &[Person]) {
        if !self.shared_feed {
            self.feed.push(people);
        }
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

    /// Streams the rows `page(store, after_id, n)` returns after `*after`,
    /// a page at a time, until a short page or `left` rows: the call holds
    /// one page. `*after` ends as the last id sent.
    async fn stream_pages(
        &self,
        out: &mut Sink<Person>,
        after: &mut i32,
        left: &mut u64,
        page: impl Fn(&dyn Store, i32, u32) -> Result<Vec<Person>, StoreError> + Clone + Send + 'static,
    ) -> Result<(), Status> {
        while *left > 0 {
            let n = (*left).min(PAGE as u64) as u32;
            let page = page.clone();
            let from = *after;
            let rows = self.blocking(move |s| page(s, from, n)).await?;
            for p in &rows {
                out.send_with_cursor(p, cursor(p.id, *left - 1)).await?;
                *after = p.id;
                *left -= 1;
            }
            if rows.len() < n as usize {
                break;
            }
        }
        Ok(())
    }

    /// Validates and stores one person.
    pub async fn store_person(&self, p: Person) -> Result<Person, Status> {
        validate_person(&p)?;
        let mut stored = self.blocking(move |s| s.create_people(&[p])).await?;
        self.stored(&stored);
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
        let mut bytes = 0;
        while let Some(p) = requests.message().await? {
            bytes += zrpc_proto::Message::encoded_len(&p);
            if people.len() == MAX_IMPORT || bytes > MAX_IMPORT_BYTES {
                return Err(Status::new(
                    Code::ResourceExhausted,
                    format!("at most {MAX_IMPORT} people and {MAX_IMPORT_BYTES} bytes per import"),
                ));
            }
            validate_person(&p)
                .map_err(|e| invalid(format!("person {}: {}", people.len(), e.message())))?;
            people.push(p);
        }
        let stored = self.blocking(move |s| s.create_people(&people)).await?;
        self.stored(&stored);
        Ok(ImportSummary {
            created: stored.len() as u32,
            rejected: 0,
            ids: stored.iter().map(|p| p.id).collect(),
        })
    }

    async fn list_people(
        &self,
        ctx: CallContext,
        request: ListPeopleRequest,
        mut responses: Sink<Person>,
    ) -> Result<(), Status> {
        let (mut after, mut left) = start(&ctx, &mut responses, request.after_id, request.limit)?;
        let filter = Arc::new(request.name_contains);
        self.stream_pages(&mut responses, &mut after, &mut left, move |s, after, n| {
            s.list_people(&filter, after, n)
        })
        .await
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
        ctx: CallContext,
        request: MembersRequest,
        mut responses: Sink<Person>,
    ) -> Result<(), Status> {
        let v = request.vertex_id;
        let kind = self
            .blocking(move |s| match s.label_of(v)?.as_deref() {
                None => Err(StoreError::NotFound(format!("vertex_id: no vertex {v}"))),
                Some(DEPARTMENT) => Ok(EdgeKind::MemberOf),
                Some(ORGANIZATION) => Ok(EdgeKind::WorksFor),
                Some(l) => Err(StoreError::Invalid(format!(
                    "vertex_id: vertex {v} is a {l}; members needs a department or an organization"
                ))),
            })
            .await?;
        let (mut after, mut left) = start(&ctx, &mut responses, request.after_id, 0)?;
        self.stream_pages(&mut responses, &mut after, &mut left, move |s, after, n| {
            s.people_linked_to(kind, v, after, n)
        })
        .await
    }

    async fn watch_people(
        &self,
        ctx: CallContext,
        request: ListPeopleRequest,
        mut responses: Sink<Person>,
    ) -> Result<(), Status> {
        // Keyset paging from the last id sent: the call holds one page.
        let (mut after, mut left) = start(&ctx, &mut responses, request.after_id, request.limit)?;
        let filter = Arc::new(request.name_contains);
        while left > 0 {
            // The feed's place before looking, so a creation during the
            // look is in the feed after it (and skipped if already sent).
            let place = self.feed.position();
            let f = filter.clone();
            self.stream_pages(&mut responses, &mut after, &mut left, move |s, after, n| {
                s.list_people(&f, after, n)
            })
            .await?;
            // Live: new people come from the feed, which wakes this stream
            // only for people its filter matches; the store is read again
            // only by a watcher that fell behind the feed.
            let mut watcher = self.feed.watcher(&filter, place);
            while left > 0 {
                let Found::People(new) = watcher.next().await else {
                    break;
                };
                for p in new {
                    if p.id > after {
                        responses
                            .send_with_cursor(&p, cursor(p.id, left - 1))
                            .await?;
                        after = p.id;
                        left -= 1;
                        if left == 0 {
                            break;
                        }
                    }
                }
            }
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
