"""What verifying one signed approval costs, against a bare Ed25519 verify."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from modelops.identity.keys import ActorKey, generate_signing_key
from modelops.identity.statements import Expected, SignedKind, SignedStatement, sign_statement
from modelops.identity.verify import verify_statement


def measure_verification_cost(n: int = 2000, *, seed_actor: str = "bench-approver") -> dict:
    """Signature verification cost per approval, against raw Ed25519 in the same process.

    Per approval = parse the canonical bytes, resolve the key, verify, check subject, nonce,
    epoch and window: what the registry pays on every signed transition. The baseline is a
    bare Ed25519 verify of the same bytes, so the ratio is the envelope's overhead.
    """
    key = generate_signing_key()
    keys = [ActorKey(actor=seed_actor, key=key.public_key)]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    blobs = [
        sign_statement(
            key,
            kind=SignedKind.approval,
            signer=seed_actor,
            epoch=7,
            now=now,
            model="bench-model",
            version=3,
            slice="global",
            target_state="CANARY",
        ).to_bytes()
        for _ in range(n)
    ]
    seen: set[str] = set()
    expect = Expected(kind=SignedKind.approval, model="bench-model", version=3, slice="global")
    samples: list[float] = []
    for b in blobs:
        t0 = time.perf_counter()
        p = verify_statement(
            b,
            keys=keys,
            now=now,
            current_epoch=7,
            nonce_seen=seen.__contains__,
            acting_actor="bench-deployer",
            expect=expect,
        )
        samples.append(time.perf_counter() - t0)
        seen.add(p.nonce)
    pairs = [(SignedStatement.from_bytes(b), b) for b in blobs[: min(n, 500)]]
    raw = [(bytes.fromhex(s.signature), s.payload.canonical_bytes()) for s, _ in pairs]
    base: list[float] = []
    for sig, msg in raw:
        t0 = time.perf_counter()
        key.public_key.verify(sig, msg)
        base.append(time.perf_counter() - t0)
    samples.sort()
    base.sort()
    med = samples[len(samples) // 2]
    bmed = base[len(base) // 2]
    return {
        "approvals": n,
        "verify_per_approval_p50_us": round(med * 1e6, 1),
        "verify_per_approval_p99_us": round(samples[int(len(samples) * 0.99)] * 1e6, 1),
        "raw_ed25519_verify_p50_us": round(bmed * 1e6, 1),
        "overhead_ratio_vs_raw": round(med / bmed, 2),
        "approvals_per_s": round(1 / med),
    }
