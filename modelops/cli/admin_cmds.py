"""`modelops db …`, `actor …` and `team …`: the registry's schema and its people."""

from __future__ import annotations

import argparse
from typing import Any

from modelops.cli import governance_cmds
from modelops.cli.cmd_support import actor_opt, open_registry


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from modelops.store import db

    engine = db.make_engine(db.resolve_url(args.registry))
    try:
        before = db.current_revision(engine)
        db.upgrade(engine)
        print(f"registry schema: {before or 'empty'} -> {db.current_revision(engine)}")
    finally:
        engine.dispose()
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    from modelops.store import db

    engine = db.make_engine(db.resolve_url(args.registry))
    try:
        rev = db.current_revision(engine)
    finally:
        engine.dispose()
    print(f"{rev or 'empty'} (code expects {db.HEAD_REVISION})")
    return 0


def cmd_db_grant_app(args: argparse.Namespace) -> int:
    from modelops.store import db
    from modelops.store.roles import grant_app_role

    engine = db.make_engine(db.resolve_url(args.registry))
    try:
        for statement in grant_app_role(engine, args.role):
            print(f"{statement};")
    finally:
        engine.dispose()
    return 0


def cmd_team_add(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
        name = reg.add_team(args.name, actor=args.actor)
    print(f"team {name}")
    return 0


def cmd_team_list(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
        for name in reg.list_teams():
            print(name)
    return 0


def register(sub: Any) -> None:
    dbp = sub.add_parser("db", help="registry schema").add_subparsers(dest="sub", required=True)
    dbp.add_parser("upgrade", help="apply migrations").set_defaults(fn=cmd_db_upgrade)
    dbp.add_parser("current", help="show the schema revision").set_defaults(fn=cmd_db_current)
    g = dbp.add_parser(
        "grant-app",
        help="PostgreSQL, run as the owner: give ROLE (which owns nothing) the registry's row "
        "rights and no more; rerun after every upgrade",
    )
    g.add_argument("role")
    g.set_defaults(fn=cmd_db_grant_app)

    ap = sub.add_parser("actor", help="people and their teams").add_subparsers(
        dest="sub", required=True
    )
    governance_cmds.register_actor(ap)  # add (with role and key), add-key, revoke-key, keys

    tp = sub.add_parser("team", help="the known teams").add_subparsers(dest="sub", required=True)
    a = tp.add_parser("add", help="make a team known (owners and approvers name known teams)")
    a.add_argument("name")
    actor_opt(a)
    a.set_defaults(fn=cmd_team_add)
    tp.add_parser("list", help="the known teams").set_defaults(fn=cmd_team_list)
    governance_cmds.register_team(tp)  # unlock
