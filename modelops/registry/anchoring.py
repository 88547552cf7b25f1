"""What `audit verify` checks beyond the hash chains: signatures, keys and anchors.

Signatures: every approval, override and amendment entry carries its signed statement, and
is re-verified against the key that signed it, as of when it was recorded (a key revoked
later does not void it); the key table is itself replayed from its `add_key`/`revoke_key`
entries, so a key slipped into `actor_keys` behind the registry's back verifies nothing.

Anchors: a signed checkpoint of every chain head goes to the artifact store, outside the
database. Someone with full database access can rewrite a chain so that every hash, link
and head agrees, and the replay cross-checks cannot see it; the anchored hash at the
anchored seq can, because it is signed by a service key and kept where they cannot write.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from modelops.artifacts import ArtifactStore, LocalArtifactStore, S3ArtifactStore
from modelops.audit import REGISTRY_CHAIN, AuditProblem, AuditReport, chain_for
from modelops.errors import IntegrityError, NotFoundError, SignatureRefused, SpecError
from modelops.identity import (
    ActorKey,
    PublicKey,
    SignedAnchor,
    SignedStatement,
    SigningKey,
    check_anchor,
    make_anchor,
    reverify_recorded,
)
from modelops.store import db
from modelops.store.tables import actor_keys, approvals, audit_heads, audit_log, overrides

from .audit_ops import AuditOps
from .checks import actor_name
from .records import parse_ts
from .signatures import SERVICE_ROLE, SignatureOps

__all__ = ["AnchorOps", "SIGNED_ACTIONS", "anchor_index"]

SIGNED_ACTIONS = ("approval", "override", "amend_model", "break_glass", "unlock_team")
"""Audit actions that must carry a signed statement (since `enable_signatures`)."""

_ANCHOR_DIR = "anchors"


class AnchorOps(SignatureOps, AuditOps):
    def verify_audit(
        self, model_id: str | None = None, *, anchors: ArtifactStore | None = None
    ) -> AuditReport:
        """The chains and their replay (AuditOps), then every signature those chains hold
        and the key table; with `anchors`, every anchored head against the database too."""
        report = super().verify_audit(model_id)
        with db.read_tx(self.engine) as conn:
            if model_id is not None:
                chains = [chain_for(model_id), REGISTRY_CHAIN]
            else:
                chains = list(conn.execute(select(audit_log.c.chain).distinct()).scalars())
            report.problems.extend(self._signature_problems(conn, chains))
        if anchors is not None:
            report.problems.extend(self.check_anchors(anchors))
        return report

    # ------------------------------------------------------------------ anchors

    def anchor_heads(self, store: ArtifactStore, key: SigningKey, *, signer: str) -> SignedAnchor:
        """Sign every chain head with a registered service key and write the checkpoint to
        the artifact store (content-addressed, plus a dated index entry); it links to the
        previous checkpoint so one cannot be dropped from the sequence unnoticed."""
        signer = actor_name(signer)
        with db.read_tx(self.engine) as conn:
            if self._role_of(conn, signer) != SERVICE_ROLE:
                raise SpecError(
                    f"{signer!r} is not a service actor; allowed: an actor added with "
                    "--role service signs anchors"
                )
            mine = {k.key.key_id: k for k in self._keys_for(conn, signer, key.key_id)}
            found = mine.get(key.key_id)
            if found is None or found.actor != signer:
                raise SignatureRefused(
                    f"key {key.key_id[:16]} is not registered to {signer!r}; allowed: a key "
                    f"added with `modelops actor add {signer} --role service --public-key FILE`"
                )
            if found.revoked_at is not None:
                raise SignatureRefused(f"key {key.key_id[:16]} of {signer!r} is revoked")
            heads = {r.chain: (r.seq, r.hash) for r in conn.execute(select(audit_heads))}
        previous = list_anchors(store)
        anchor = make_anchor(
            heads, key, now=self._now(), prev=previous[-1].sha256 if previous else None
        )
        _write_anchor(store, anchor)
        return anchor

    def check_anchors(self, store: ArtifactStore) -> list[AuditProblem]:
        """Every anchored head against the database now; a broken anchor sequence too."""
        anchors = list_anchors(store)
        if not anchors:
            return [
                AuditProblem(
                    chain="_anchors",
                    seq=None,
                    entry_id=None,
                    kind="MISSING",
                    detail=f"no anchor checkpoints in {store!r}; write one with `modelops anchor`",
                )
            ]
        out: list[AuditProblem] = []
        with db.read_tx(self.engine) as conn:
            service = self.service_keys(conn)
            heads = {r.chain: (r.seq, r.hash) for r in conn.execute(select(audit_heads))}

            def hash_at(chain: str, seq: int) -> str | None:
                return conn.execute(
                    select(audit_log.c.hash).where(
                        audit_log.c.chain == chain, audit_log.c.seq == seq
                    )
                ).scalar()

            prev: str | None = None
            for a in anchors:
                where = f"anchor {a.checkpoint.ts} ({a.sha256[:12]})"
                if a.checkpoint.prev != prev:
                    out.append(
                        _anchor_problem(
                            "BROKEN_SEQUENCE",
                            f"{where} does not follow "
                            f"the anchor before it: a checkpoint is missing",
                        )
                    )
                prev = a.sha256
                try:
                    found = check_anchor(
                        a, service_keys=service, current_heads=heads, hash_at=hash_at
                    )
                except SignatureRefused as exc:
                    out.append(_anchor_problem("ANCHOR_" + exc.reason.upper(), f"{where}: {exc}"))
                    continue
                out += [
                    AuditProblem(
                        chain=p.chain,
                        seq=p.anchored_seq,
                        entry_id=None,
                        kind=p.kind,
                        detail=f"{p.detail} (anchor {a.sha256[:12]})",
                    )
                    for p in found
                ]
        return out

    # ------------------------------------------------------------------ signatures

    def _signature_problems(self, conn: Connection, chains: list[str]) -> list[AuditProblem]:
        """Re-verify every signed statement the given chains hold, and the key table."""
        keys = self._all_keys(conn)
        legacy_before = _legacy_before(conn)
        out = _key_table_problems(conn, keys)
        nonces: dict[str, str] = {}
        rows = conn.execute(
            select(audit_log)
            .where(audit_log.c.chain.in_(chains), audit_log.c.action.in_(SIGNED_ACTIONS))
            .order_by(audit_log.c.id)
        ).all()
        for e in rows:
            payload = json.loads(e.payload)
            where = f"{e.chain}: seq {e.seq} ({e.action} {e.model_id}@{e.version})"
            signed = payload.get("statement")
            if signed is None:
                if legacy_before is not None and e.id <= legacy_before:
                    continue  # recorded before the registry verified signatures
                out.append(_sig_problem(e, "UNSIGNED", f"{where} carries no signature"))
                continue
            try:
                stmt = SignedStatement.from_obj(signed)
                p = reverify_recorded(
                    stmt, keys=_signer_keys(keys, stmt), recorded_at=parse_ts(e.ts)
                )
            except SignatureRefused as exc:
                out.append(_sig_problem(e, "SIGNATURE_" + exc.reason.upper(), f"{where}: {exc}"))
                continue
            if p.signer != e.actor or p.model != e.model_id:
                out.append(
                    _sig_problem(
                        e,
                        "SIGNATURE_WRONG_SUBJECT",
                        f"{where}: signed by "
                        f"{p.signer!r} for {p.model!r}, recorded as {e.actor!r} on "
                        f"{e.model_id!r}",
                    )
                )
            if e.action in ("approval", "override", "break_glass") and (
                p.version != e.version or p.slice != payload.get("slice")
            ):
                out.append(
                    _sig_problem(
                        e,
                        "SIGNATURE_WRONG_SUBJECT",
                        f"{where}: the signature is for version {p.version} slice {p.slice!r}",
                    )
                )
            if e.action == "amend_model":
                out += _amendment_problems(e, payload, p.spec_sha256, keys, where)
            elif e.action == "break_glass":
                out += _approval_problems(
                    e,
                    payload,
                    keys,
                    where,
                    (p.version, p.slice, p.epoch),
                )
            if p.nonce in nonces:
                out.append(
                    _sig_problem(
                        e,
                        "SIGNATURE_REPLAYED",
                        f"{where}: nonce {p.nonce[:12]} was already used by {nonces[p.nonce]}",
                    )
                )
            nonces[p.nonce] = where
        out += _cascade_problems(conn, chains, keys, nonces)
        models = [c.removeprefix("model:") for c in chains if c.startswith("model:")]
        out += _table_statement_problems(conn, models, keys)
        return out


# ---------------------------------------------------------------------------- helpers


def _amendment_problems(
    e: Any, payload: dict[str, Any], signed_sha: str | None, keys: dict[str, ActorKey], where: str
) -> list[AuditProblem]:
    """The recorded spec is the one signed, and every approval of it still verifies."""
    from modelops.spec import ModelSpec

    from .amendments import spec_sha256

    out = []
    sha = spec_sha256(ModelSpec.model_validate(payload["spec"]))
    if sha != signed_sha or sha != payload.get("to_sha256"):
        out.append(
            _sig_problem(
                e,
                "SIGNATURE_WRONG_SUBJECT",
                f"{where}: the recorded spec "
                f"hashes to {sha[:12]}, not the signed {str(signed_sha)[:12]}",
            )
        )
    for raw in payload.get("approvals") or []:
        try:
            st = SignedStatement.from_obj(raw)
            ap = reverify_recorded(st, keys=_signer_keys(keys, st), recorded_at=parse_ts(e.ts))
        except SignatureRefused as exc:
            out.append(_sig_problem(e, "SIGNATURE_" + exc.reason.upper(), f"{where}: {exc}"))
            continue
        if ap.spec_sha256 != sha:
            out.append(
                _sig_problem(
                    e,
                    "SIGNATURE_WRONG_SUBJECT",
                    f"{where}: an approval by {ap.signer!r} is for another spec",
                )
            )
    return out


def _approval_problems(
    e: Any,
    payload: dict[str, Any],
    keys: dict[str, ActorKey],
    where: str,
    subject: tuple[int | None, str | None, int],
) -> list[AuditProblem]:
    """Every approval an entry carries still verifies, and is of the same subject."""
    out = []
    for raw in payload.get("approvals") or []:
        try:
            st = SignedStatement.from_obj(raw)
            ap = reverify_recorded(st, keys=_signer_keys(keys, st), recorded_at=parse_ts(e.ts))
        except SignatureRefused as exc:
            out.append(_sig_problem(e, "SIGNATURE_" + exc.reason.upper(), f"{where}: {exc}"))
            continue
        if ap.model != e.model_id or (ap.version, ap.slice, ap.epoch) != subject:
            out.append(
                _sig_problem(
                    e,
                    "SIGNATURE_WRONG_SUBJECT",
                    f"{where}: an approval by {ap.signer!r} is for another subject",
                )
            )
    return out


def _cascade_problems(
    conn: Connection, chains: list[str], keys: dict[str, ActorKey], nonces: dict[str, str]
) -> list[AuditProblem]:
    """The cascade approvals a rollback entry carries still verify, are cascade approvals
    rooted at that rollback's model and slice, and were each used once."""
    out = []
    rows = conn.execute(
        select(audit_log)
        .where(audit_log.c.chain.in_(chains), audit_log.c.action == "rollback")
        .order_by(audit_log.c.id)
    ).all()
    for e in rows:
        payload = json.loads(e.payload)
        for raw in payload.get("cascade_approvals") or []:
            where = (
                f"{e.chain}: seq {e.seq} (cascade approval in rollback {e.model_id}@{e.version})"
            )
            try:
                st = SignedStatement.from_obj(raw)
                p = reverify_recorded(st, keys=_signer_keys(keys, st), recorded_at=parse_ts(e.ts))
            except SignatureRefused as exc:
                out.append(_sig_problem(e, "SIGNATURE_" + exc.reason.upper(), f"{where}: {exc}"))
                continue
            if (p.kind.value, p.cascade_root, p.slice) != (
                "cascade_approval",
                e.model_id,
                payload.get("slice"),
            ):
                out.append(
                    _sig_problem(
                        e,
                        "SIGNATURE_WRONG_SUBJECT",
                        f"{where}: a {p.kind.value} by {p.signer!r} rooted at "
                        f"{p.cascade_root!r} on slice {p.slice!r}",
                    )
                )
            if p.nonce in nonces:
                out.append(
                    _sig_problem(
                        e,
                        "SIGNATURE_REPLAYED",
                        f"{where}: nonce {p.nonce[:12]} was already used by {nonces[p.nonce]}",
                    )
                )
            nonces[p.nonce] = where
    return out


def _signer_keys(keys: dict[str, ActorKey], stmt: SignedStatement) -> list[ActorKey]:
    return [
        k for k in keys.values() if k.actor == stmt.payload.signer or k.key.key_id == stmt.key_id
    ]


def _legacy_before(conn: Connection) -> int | None:
    raw = conn.execute(
        select(audit_log.c.payload).where(
            audit_log.c.chain == chain_for(None), audit_log.c.action == "enable_signatures"
        )
    ).scalar()
    return int(json.loads(raw)["legacy_before_id"]) if raw else None


def _key_table_problems(conn: Connection, keys: dict[str, ActorKey]) -> list[AuditProblem]:
    """actor_keys against the registry chain's add_key/revoke_key entries."""
    want: dict[str, tuple[str, bool]] = {}
    for e in conn.execute(
        select(audit_log.c.action, audit_log.c.payload)
        .where(
            audit_log.c.chain == chain_for(None),
            audit_log.c.action.in_(("add_key", "revoke_key")),
        )
        .order_by(audit_log.c.seq)
    ):
        p = json.loads(e.payload)
        if e.action == "add_key":
            want[p["key_id"]] = (p["name"], False)
        elif p["key_id"] in want:
            want[p["key_id"]] = (p["name"], True)
    out = []
    rows = {r.key_id: r for r in conn.execute(select(actor_keys))}
    for kid in sorted(set(rows) | set(want)):
        r, w = rows.get(kid), want.get(kid)
        if r is not None and PublicKey.from_pem(r.public_key).key_id != kid:
            detail = f"key {kid[:16]}: the stored public key does not hash to its key id"
        elif w is None:
            detail = f"key {kid[:16]} of {r.actor!r} has no add_key entry"  # type: ignore[union-attr]
        elif r is None:
            detail = f"key {kid[:16]} was added for {w[0]!r} but has no actor_keys row"
        elif (r.actor, r.revoked_at is not None) != w:
            detail = (
                f"key {kid[:16]} is {r.actor!r}/{'revoked' if r.revoked_at else 'active'} in "
                f"actor_keys, but its entries say {w[0]!r}/{'revoked' if w[1] else 'active'}"
            )
        else:
            continue
        out.append(
            AuditProblem(
                chain=chain_for(None),
                seq=None,
                entry_id=None,
                kind="KEY_MISMATCH",
                detail=f"{chain_for(None)}: {detail}",
            )
        )
    return out


def _table_statement_problems(
    conn: Connection, models: list[str], keys: dict[str, ActorKey]
) -> list[AuditProblem]:
    """Approval and override rows written without a statement, or with one for another row."""
    out = []
    legacy = _legacy_before(conn) is not None
    for table, who in ((approvals, "approver"), (overrides, "actor")):
        for r in conn.execute(select(table).where(table.c.model_id.in_(models))):
            chain = chain_for(r.model_id)
            what = f"{table.name} row {r.id} ({r.model_id}@{r.version} slice {r.slice!r})"
            if r.statement is None:
                if not legacy:
                    out.append(
                        AuditProblem(
                            chain=chain,
                            seq=None,
                            entry_id=None,
                            kind="UNSIGNED",
                            detail=f"{chain}: {what} has no signed statement",
                        )
                    )
                continue
            try:
                stmt = SignedStatement.from_obj(r.statement)
                p = reverify_recorded(
                    stmt, keys=_signer_keys(keys, stmt), recorded_at=parse_ts(r.ts)
                )
            except SignatureRefused as exc:
                out.append(
                    AuditProblem(
                        chain=chain,
                        seq=None,
                        entry_id=None,
                        kind="SIGNATURE_" + exc.reason.upper(),
                        detail=f"{chain}: {what}: {exc}",
                    )
                )
                continue
            subject = (p.signer, p.model, p.version, p.slice, p.target_state, p.epoch)
            row = (getattr(r, who), r.model_id, r.version, r.slice, r.target_state, r.epoch)
            if subject != row:
                out.append(
                    AuditProblem(
                        chain=chain,
                        seq=None,
                        entry_id=None,
                        kind="SIGNATURE_WRONG_SUBJECT",
                        detail=f"{chain}: {what} is not what its statement signs ({subject})",
                    )
                )
    return out


def _sig_problem(e: Any, kind: str, detail: str) -> AuditProblem:
    return AuditProblem(chain=e.chain, seq=e.seq, entry_id=e.id, kind=kind, detail=detail)


def _anchor_problem(kind: str, detail: str) -> AuditProblem:
    return AuditProblem(chain="_anchors", seq=None, entry_id=None, kind=kind, detail=detail)


# ---------------------------------------------------------------------------- the store side


def anchor_index(store: ArtifactStore) -> str:
    """Where a store keeps its anchor index (the blobs themselves are content-addressed)."""
    if isinstance(store, LocalArtifactStore):
        return str(store.root / _ANCHOR_DIR)
    if isinstance(store, S3ArtifactStore):
        return f"s3://{store.bucket}/{_s3_prefix(store)}"
    raise SpecError(f"{store!r} cannot hold anchors; allowed: a local or S3 artifact store")


def _s3_prefix(store: S3ArtifactStore) -> str:
    return f"{store.prefix}/{_ANCHOR_DIR}/" if store.prefix else f"{_ANCHOR_DIR}/"


def _index_name(anchor: SignedAnchor) -> str:
    # Sorts by time; the sha makes two anchors in one microsecond distinct.
    return f"{anchor.checkpoint.ts}-{anchor.sha256}.json"


def _write_anchor(store: ArtifactStore, anchor: SignedAnchor) -> None:
    data = anchor.to_bytes()
    store.put_bytes(data)
    name = _index_name(anchor)
    if isinstance(store, LocalArtifactStore):
        d = Path(anchor_index(store))
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(d / name)
    elif isinstance(store, S3ArtifactStore):
        store.client.put_object(Bucket=store.bucket, Key=_s3_prefix(store) + name, Body=data)
    else:
        anchor_index(store)


def _index_entries(store: ArtifactStore) -> Iterator[bytes]:
    if isinstance(store, LocalArtifactStore):
        d = Path(anchor_index(store))
        if d.is_dir():
            for p in sorted(d.glob("*.json")):
                yield p.read_bytes()
        return
    if isinstance(store, S3ArtifactStore):
        names: list[str] = []
        token: dict[str, str] = {}
        while True:
            page = store.client.list_objects_v2(
                Bucket=store.bucket, Prefix=_s3_prefix(store), **token
            )
            names += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                break
            token = {"ContinuationToken": page["NextContinuationToken"]}
        for name in sorted(names):
            yield store.client.get_object(Bucket=store.bucket, Key=name)["Body"].read()
        return
    anchor_index(store)


def list_anchors(store: ArtifactStore) -> list[SignedAnchor]:
    """The store's checkpoints, oldest first; each index entry is checked against the
    content-addressed copy, so an edited index entry is named, not trusted."""
    out = []
    for data in _index_entries(store):
        anchor = SignedAnchor.from_bytes(data)
        try:
            if store.read_bytes(anchor.sha256) != data:
                raise NotFoundError("differs")
        except (NotFoundError, IntegrityError):
            raise SignatureRefused(
                f"anchor {anchor.checkpoint.ts} in the index has no identical content-addressed "
                f"copy {anchor.sha256[:12]} in {store!r}"
            ) from None
        out.append(anchor)
    return out
