//! factcheck: a gRPC server where fact-checking analysts annotate the claims
//! in news articles.
//!
//! # Bird's-eye view
//!
//! Articles start as seed files and change by revisions: a reviewer (or a
//! changed seed file) corrects one, and every annotation on it is re-anchored
//! ([`anchor`]): in the correction's own revision, or, past one chunk of
//! annotations, in the revisions right after it (`store::reanchoring`). Analysts create annotations: a span of
//! an article revision's text, stored in Unicode code points (clients may
//! count in UTF-16 or UTF-8: [`convert`] translates), with a verdict, a note
//! and sources. Every mutation
//! goes through one committer thread that checks whole groups of waiting
//! mutations and hands each group, as one list of key changes, to the
//! store's **engine** ([`store::engine`]), which commits it atomically and
//! durably, and only then answers (group commit). Two engines sit behind
//! that one boundary: **sled** (the default: a write-ahead log synced once
//! per group, then sled; sled made durable behind the log, a segment at a
//! time) and **etcd** (one `Txn` per group, guarded by the store's revision
//! key). Everything else is shared: each change has a history record
//! chained by SHA-256; reads
//! go to an in-memory index of spans (kept by the committer) and to the
//! engine for the records, *at the last published revision*: a record newer
//! than that is read from its history, so readers never wait for a commit
//! and never see one that is not durable. A failed commit stops writes
//! (fail-stop); on etcd, one whose answer was lost is settled with etcd
//! before the next. On etcd several servers (replicas) share one store:
//! each follows the others' commits through the changelog
//! (`store::follow`), a commit that lost the race to another is checked
//! again on the new state, and a read first catches up with a quorum read
//! of the store's revision, so any replica answers any call.
//! `GetArticleReview` says where the review of an article stands (state,
//! agreement, contested spans and their adjudications, the sign-off),
//! computed once per state of the article; reviewers settle contested spans
//! and sign reviews off through the same committer, and any later change to
//! the article withdraws a sign-off in its own commit. Tokens carry roles:
//! reader, analyst, reviewer, admin.
//!
//! # Layout
//!
//! - [`pb`]: generated protobuf and gRPC code only.
//! - [`domain`]: types that cannot hold invalid values (spans, names,
//!   verdicts, article revisions, anchor states, offset encodings).
//! - [`review`]: where an article's review stands (state, contested spans,
//!   adjudications, sign-off), computed from a copy of its index.
//! - [`anchor`]: where a span goes when its article's text is corrected: a
//!   token diff, then a quote-and-context search.
//! - [`convert`]: protobuf ↔ domain, and all request validation.
//! - [`error`]: the one error enum and its one mapping to gRPC statuses.
//! - [`store`]: the store; `store::engine` the boundary and its two
//!   engines (`engine::sled`, the only code that imports sled, and
//!   `engine::etcd`; docs/ENGINES.md compares them); key layout in `store::keys`,
//!   the in-memory index in `store::index`, reads as of a past revision
//!   (the same on both engines) in `store::as_of`, the audit history in
//!   `store::audit`, the review history in `store::review_log`, backups and
//!   restores in `store::backup`, following other servers' commits on
//!   etcd in `store::follow`, the write-ahead log and its recovery in
//!   `store::wal`, syncing sled's log and blob files at a checkpoint in
//!   `store::sync`, where the committer's time goes in `store::figures`,
//!   a correction's re-anchoring in chunks (and its resumption) in
//!   `store::reanchoring`, the committer's batched reads in
//!   `store::read_ahead` and shared quorum reads in `store::quorum`.
//! - [`auth`]: bearer tokens → analysts and roles; the tokens file;
//!   [`auth_etcd`] the tokens a cluster keeps in etcd, watched.
//! - [`codec`]: prost's gRPC codec, with undecodable requests as
//!   INVALID_ARGUMENT.
//! - [`service`]: the RPC handlers; `service::articles` the ones that
//!   create and correct articles, `service::reviews` the review workflow
//!   (dashboards, adjudication, sign-off, the review history),
//!   `service::backup` streaming a backup.
//! - [`watch`]: one task per `WatchAnnotations` stream: changelog replay, then
//!   the live broadcast; `watch::reviews` one per `WatchArticleReviews`
//!   stream (states, coalesced).
//! - [`server`]: [`server::run`] serves on a listener the caller bound (TLS,
//!   the per-call deadline, the request size limit, HTTP/2 limits).
//! - [`listener`]: accepting connections: the connection cap, back-off when
//!   out of descriptors, the first-byte timeout.
//! - [`web`]: the web app (`web/`, built and embedded), served at `/`; it
//!   calls the API over grpc-web on the same port.
//! - [`config`]: command-line flags.
//! - [`cli`]: the client subcommands (`annotate`, `list`, `get`, `history`,
//!   `apply`, `export` with W3C Web Annotations both ways and ClaimReview,
//!   `resolve`, `signoff`, `backup`, ...; their JSON is the canonical proto3
//!   mapping) and the offline ones (`token`, `audit verify`, `restore`).
//! - `bin/factcheck.rs`: the binary.
//!
//! Outside `src/`: `web/` (the browser app, its own code map in
//! `web/README.md`) and `clients/python/` (the Python client, code map in
//! its README).
//!
//! # Invariants
//!
//! - Every acknowledged mutation is durable. sled: its group's frame is in
//!   the synced write-ahead log before the committer answers, and a log
//!   segment is deleted only once sled holds all its groups durably
//!   (flushed and synced); an open replays the log past the revision sled
//!   holds. etcd: its group's `Txn` is committed on a quorum before the
//!   committer answers.
//! - Each server's committer is its only writer, one group at a time. sled:
//!   its file lock keeps other processes out. etcd: every `Txn` compares
//!   the store's revision key with the revision the group was staged on, so
//!   a group never lands on a state it was not checked against; a replica
//!   that lost that race follows the winner's commit and checks its calls
//!   again.
//! - State a server did not commit itself enters it only by following the
//!   changelog, in revision order, on the committer thread (etcd); a read
//!   answers only once its server has followed to the store revision a
//!   quorum read returned when the read began, or to the `min_revision` the
//!   client gave.
//! - A read as of revision `r` is today's state with every change after `r`
//!   taken back (changelog + audit history): possible exactly while the
//!   changelog holds `r + 1` onwards, refused `OUT_OF_RANGE` before.
//! - Revisions are gap-free on both engines: each committed job (one RPC)
//!   is the next one (the store's own revision, not etcd's).
//! - A reader sees whole commit groups, only once they are durable, together
//!   with the revision they brought the store to; no reader holds a lock
//!   across a flush or a sync.
//! - Every change of an annotation has its own history record, even two in
//!   one revision.
//! - Memory per client is bounded in bytes: responses by the response limit,
//!   watch streams by their queue budget and the live ring's size cap.
//! - A rejected request changes nothing: a job is checked completely before
//!   any of it is staged.
//! - Spans are `[start, end)` in code points, `start < end <= length` of the
//!   article revision named by the annotation's `article_revision`, on
//!   grapheme cluster boundaries. Every annotation but an orphaned one points
//!   into its article's current revision once its correction's re-anchoring
//!   is done: a correction re-anchors them in its own commit and, past one
//!   chunk, in the next ones, with a mark (`g` key) standing until the last,
//!   which refuses a further correction, adjudication or sign-off of the
//!   article and is finished by the next server to open the store; a create
//!   or span update checked against a replaced revision is refused.
//! - Article revisions are never rewritten: any history record's quote reads
//!   the text it judged.
//! - The index, the changelog and the audit history change in the same
//!   commit as the annotations they describe: readers under the lock see them
//!   agree. The history is never trimmed; each record's hash covers the
//!   previous record's.
//! - A sign-off stands only on the state it was made on: the committer
//!   checks the review's etag (the revision of the article's last change)
//!   before it records one, and records its withdrawal in the commit of any
//!   later change to the article. An adjudication settles a contested span
//!   only while the annotations intersecting it are exactly those it was
//!   made on, at the revisions they had.
//! - Roles are checked before anything about the request or the store.
//! - Clients never see sled errors or file paths: `Error::Internal` is logged
//!   and answered as a plain "internal error".

pub mod agreement;
pub mod anchor;
pub mod auth;
pub mod auth_etcd;
pub mod cli;
pub mod codec;
pub mod config;
pub mod convert;
pub mod domain;
pub mod error;
/// A client of etcd v3 over tonic (the etcd engine's connection to its cluster).
pub mod etcd;
pub mod listener;
pub mod pb;
pub mod review;
pub mod server;
pub mod service;
pub mod store;
pub mod watch;
pub mod web;
