"""`modelops keygen`, `actor add-key|revoke-key|keys`, `anchor` and `model amend`: who may
sign, and the signatures the registry checks.

An actor is a key: approvals, overrides and amendments are signed with the actor's private
key (`--key FILE`, or `MODELOPS_KEY`), or handed over already signed (`--statement FILE`, a
statement made elsewhere, e.g. with `modelops sign`). Nothing here sends a private key
anywhere; the registry sees the statement and its signature only.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from modelops.cli.cmd_support import actor_opt, artifact_store, open_registry
from modelops.errors import SpecError

__all__ = [
    "register",
    "register_actor",
    "register_model",
    "register_team",
    "signing_opts",
    "signed_by",
]


def signing_opts(sp: argparse.ArgumentParser) -> None:
    g = sp.add_mutually_exclusive_group()
    g.add_argument(
        "--key",
        default=os.environ.get("MODELOPS_KEY") or None,
        metavar="FILE",
        help="the actor's Ed25519 private key (0600; default $MODELOPS_KEY), made by "
        "`modelops keygen`",
    )
    g.add_argument(
        "--statement",
        default=None,
        metavar="FILE",
        help="an already signed statement (JSON), '-' for stdin",
    )


def _read_statement(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read().strip()
    try:
        return Path(path).read_bytes().strip()
    except OSError as exc:
        raise SpecError(f"cannot read signed statement {path}: {exc.strerror}") from None


def signed_by(args: argparse.Namespace) -> dict[str, Any]:
    """The key= or statement= a registry call signs with; neither leaves it unsigned, which
    the registry refuses naming what is allowed."""
    from modelops.identity import load_signing_key

    if getattr(args, "statement", None):
        return {"statement": _read_statement(args.statement)}
    if getattr(args, "key", None):
        return {"key": load_signing_key(args.key)}
    return {}


def cmd_keygen(args: argparse.Namespace) -> int:
    from modelops.identity import generate_signing_key, write_keypair

    key = generate_signing_key()
    private, public = write_keypair(key, args.out, args.pub)
    print(f"private key: {private} (0600, keep it to yourself)")
    print(f"public key:  {public}")
    print(f"key id:      {key.key_id}")
    print(key.public_key.to_pem().decode().strip())
    return 0


def cmd_actor_add(args: argparse.Namespace) -> int:
    from modelops.registry import actor_name, team_name

    with open_registry(args) as reg:
        key_id = reg.enroll_actor(
            args.name, args.team, role=args.role, public_key=args.public_key, actor=args.actor
        )
    line = f"actor {actor_name(args.name)} in team {team_name(args.team)} as {args.role}"
    print(line + (f", key {key_id}" if key_id else ", no key yet (it cannot sign)"))
    return 0


def cmd_actor_add_key(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
        key_id = reg.add_key(args.name, args.public_key, actor=args.actor)
    print(f"key {key_id} registered to {args.name}")
    return 0


def cmd_actor_revoke_key(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
        reg.revoke_key(args.key_id, reason=args.reason, actor=args.actor)
    print(f"key {args.key_id} revoked: it signs nothing new; what it signed before stands")
    return 0


def cmd_actor_keys(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
        rows = reg.actor_keys(args.name)
    for r in rows:
        state = (
            f"revoked {r['revoked_at']} ({r['revoked_reason']})" if r["revoked_at"] else "active"
        )
        print(f"{r['actor']}  {r['key_id']}  added {r['created_at']}  {state}")
    return 0


def cmd_anchor(args: argparse.Namespace) -> int:
    from modelops.identity import SigningKey, load_signing_key

    if args.key:
        key = load_signing_key(args.key)
    elif os.environ.get("MODELOPS_SERVICE_KEY"):
        key = SigningKey.from_pem(os.environ["MODELOPS_SERVICE_KEY"], source="MODELOPS_SERVICE_KEY")
    else:
        raise SpecError("anchoring needs the service key: --key FILE or MODELOPS_SERVICE_KEY")
    store = artifact_store(args.artifacts)
    with open_registry(args) as reg:
        anchor = reg.anchor_heads(store, key, signer=args.actor)
    print(
        f"anchored {len(anchor.checkpoint.heads)} chain heads at {anchor.checkpoint.ts}: "
        f"{store.uri_for(anchor.sha256)}"
    )
    return 0


def register_actor(ap: Any) -> None:
    """`actor add` with role and key, and the key commands (called by admin_cmds)."""
    a = ap.add_parser("add", help="register an actor: team, role and public key")
    a.add_argument("name")
    a.add_argument("--team", required=True, help="a known team (`modelops team add NAME`)")
    a.add_argument("--role", default="engineer", choices=["engineer", "senior", "admin", "service"])
    a.add_argument("--public-key", default=None, metavar="FILE", help="from `modelops keygen`")
    actor_opt(a)
    a.set_defaults(fn=cmd_actor_add)
    k = ap.add_parser("add-key", help="another key for an actor (rotation: add, then revoke)")
    k.add_argument("name")
    k.add_argument("--public-key", required=True, metavar="FILE")
    actor_opt(k)
    k.set_defaults(fn=cmd_actor_add_key)
    r = ap.add_parser("revoke-key", help="revoke a key: it signs nothing new")
    r.add_argument("key_id", metavar="KEY_ID", help="the key id, or 8+ of its first characters")
    r.add_argument("--reason", required=True)
    actor_opt(r)
    r.set_defaults(fn=cmd_actor_revoke_key)
    ks = ap.add_parser("keys", help="registered keys, revoked ones included")
    ks.add_argument("name", nargs="?", default=None)
    ks.set_defaults(fn=cmd_actor_keys)


def cmd_model_amend(args: argparse.Namespace) -> int:
    from modelops.spec import load_spec_file

    spec = load_spec_file(args.spec)
    approvals = [_read_statement(p) for p in args.approval]
    with open_registry(args) as reg:
        res = reg.amend_model(
            spec, approvals=approvals, actor=args.actor, reason=args.reason, **signed_by(args)
        )
    by = f", approved by {', '.join(res.approvers)}" if res.approvers else ""
    print(
        f"model {res.model_id} amended ({', '.join(res.changed)}): spec epoch {res.epoch}, "
        f"sha256 {res.to_sha256[:12]}{by}"
    )
    return 0


def cmd_model_sign_amendment(args: argparse.Namespace) -> int:
    from modelops.identity import load_signing_key
    from modelops.spec import load_spec_file

    if not args.key:
        raise SpecError("signing needs the signer's private key: --key FILE or MODELOPS_KEY")
    spec = load_spec_file(args.spec)
    with open_registry(args) as reg:
        stmt = reg.sign_amendment(
            spec, load_signing_key(args.key), signer=args.actor, reason=args.reason
        )
    _emit(stmt.to_bytes(), args.out, f"signed approval of {spec.model_id}'s amendment")
    return 0


def register_model(mp: Any) -> None:
    """`model amend` and `model sign-amendment` (called by registry_cmds)."""
    a = mp.add_parser(
        "amend",
        help="change tier, rollback class, slices, policy, dependents, description or "
        "intended purpose: signed, with a reason; a tier or rollback-class change needs the "
        "stricter tier's signed approvals",
    )
    a.add_argument("spec", metavar="SPEC.yaml")
    a.add_argument("--reason", default=None, help="why (signed; mandatory)")
    a.add_argument(
        "--approval",
        action="append",
        default=[],
        metavar="FILE",
        help="an approver's signed statement from `model sign-amendment` (repeatable)",
    )
    actor_opt(a, required=True)
    signing_opts(a)
    a.set_defaults(fn=cmd_model_amend)
    s = mp.add_parser("sign-amendment", help="an approver signs a proposed SPEC.yaml")
    s.add_argument("spec", metavar="SPEC.yaml")
    s.add_argument("--reason", required=True)
    s.add_argument("--key", default=os.environ.get("MODELOPS_KEY") or None, metavar="FILE")
    s.add_argument("--out", default=None, metavar="FILE", help="default: print it")
    actor_opt(s, required=True)
    s.set_defaults(fn=cmd_model_sign_amendment)


def cmd_break_glass(args: argparse.Namespace) -> int:
    approvals = [_read_statement(p) for p in args.approval]
    with open_registry(args) as reg:
        res = reg.break_glass(
            args.model,
            args.version,
            approvals=approvals,
            actor=args.actor,
            reason=args.reason,
            slice=args.slice,
            **signed_by(args),
        )
    old = f", v{res.deprecated_version} deprecated" if res.deprecated_version else ""
    print(
        f"BREAK-GLASS {res.model_id}@{res.version} PROMOTED on slice {res.slice} from "
        f"{res.from_state.value}{old}; approved by {', '.join(res.approvers)}; heightened "
        f"monitoring until {res.heightened_until.isoformat()}; postmortem ticket "
        f"#{res.ticket_id} queued"
    )
    return 0


def cmd_sign_break_glass(args: argparse.Namespace) -> int:
    from modelops.identity import load_signing_key

    if not args.key:
        raise SpecError("signing needs the signer's private key: --key FILE or MODELOPS_KEY")
    with open_registry(args) as reg:
        stmt = reg.sign_break_glass(
            args.model,
            args.version,
            load_signing_key(args.key),
            signer=args.actor,
            reason=args.reason,
            slice=args.slice,
        )
    _emit(stmt.to_bytes(), args.out, f"signed break-glass of {args.model}@{args.version}")
    return 0


def _emit(data: bytes, out: str | None, what: str) -> None:
    if out:
        Path(out).write_bytes(data + b"\n")
        print(f"{what} written to {out}")
    else:
        print(data.decode())


def cmd_team_unlock(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
        reg.unlock_team(args.team, actor=args.actor, reason=args.reason, **signed_by(args))
    print(f"team {args.team} unlocked: its break-glass allowance starts over")
    return 0


def cmd_outbox_deliver(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("MODELOPS_TICKET_WEBHOOK")
    if not url:
        raise SpecError("no receiver: --url URL or MODELOPS_TICKET_WEBHOOK")
    with open_registry(args) as reg:
        delivered, pending = reg.deliver_outbox(url, timeout_s=args.timeout)
    print(f"outbox: {delivered} delivered, {pending} pending")
    return 0


def register_team(tp: Any) -> None:
    """`team unlock` (called by admin_cmds)."""
    u = tp.add_parser("unlock", help="an admin's signed unlock after a team's break-glass lockout")
    u.add_argument("team")
    u.add_argument("--reason", required=True)
    actor_opt(u, required=True)
    signing_opts(u)
    u.set_defaults(fn=cmd_team_unlock)


def register(sub: Any) -> None:
    bg = sub.add_parser(
        "break-glass",
        help="promote now, skipping shadow and canary durations: two signed senior approvals, "
        "24 h heightened monitoring, a postmortem ticket; 2 per team in 30 days",
    )
    bg.add_argument("model")
    bg.add_argument("version", type=int)
    bg.add_argument("--slice", default="global")
    bg.add_argument("--reason", required=True)
    bg.add_argument(
        "--approval",
        action="append",
        default=[],
        metavar="FILE",
        help="a senior's signed approval from `modelops sign-break-glass` (twice)",
    )
    actor_opt(bg, required=True)
    signing_opts(bg)
    bg.set_defaults(fn=cmd_break_glass)
    sb = sub.add_parser("sign-break-glass", help="a senior signs approval of a break-glass")
    sb.add_argument("model")
    sb.add_argument("version", type=int)
    sb.add_argument("--slice", default="global")
    sb.add_argument("--reason", required=True)
    sb.add_argument("--key", default=os.environ.get("MODELOPS_KEY") or None, metavar="FILE")
    sb.add_argument("--out", default=None, metavar="FILE", help="default: print it")
    actor_opt(sb, required=True)
    sb.set_defaults(fn=cmd_sign_break_glass)
    ob = sub.add_parser("outbox", help="messages waiting for delivery").add_subparsers(
        dest="sub", required=True
    )
    d = ob.add_parser("deliver", help="POST due messages (postmortem tickets) to the webhook")
    d.add_argument("--url", default=None, help="default $MODELOPS_TICKET_WEBHOOK")
    d.add_argument("--timeout", type=float, default=5.0)
    d.set_defaults(fn=cmd_outbox_deliver)

    k = sub.add_parser("keygen", help="make an Ed25519 key pair for an actor or a service")
    k.add_argument("--out", required=True, metavar="FILE", help="private key file (written 0600)")
    k.add_argument("--pub", default=None, metavar="FILE", help="public key file (default FILE.pub)")
    k.set_defaults(fn=cmd_keygen)

    an = sub.add_parser(
        "anchor", help="sign every audit chain head with the service key, into the artifact store"
    )
    an.add_argument("--key", default=None, metavar="FILE", help="default $MODELOPS_SERVICE_KEY")
    an.add_argument("--artifacts", default=None, metavar="URI")
    actor_opt(an, required=True)
    an.set_defaults(fn=cmd_anchor)
