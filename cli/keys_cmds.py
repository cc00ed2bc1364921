"""`digits keys create|list|revoke`: API keys of accounts, made on the server's side
(straight in the database, with the server secret), never over the API.

`create` prints the key alone on stdout, once (KEY=$(digits keys create NAME) in a
script), and what it is on stderr; only a keyed hash of it is stored."""

from __future__ import annotations

import contextlib
import sys

from cli.main import UserError


def register(sub) -> None:
    p = sub.add_parser("keys", help="API keys of accounts: create, list, revoke")
    keys = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    c = keys.add_parser("create", help="a new key for an account (made if new), shown once")
    c.add_argument("account", metavar="NAME", help="the account the key's jobs belong to")
    c.add_argument("--admin", action="store_true", help="the key sees every account's jobs")
    c.set_defaults(func=cmd_create)
    ls = keys.add_parser("list", help="every key: id, account, admin, made, revoked")
    ls.set_defaults(func=cmd_list)
    r = keys.add_parser("revoke", help="revoke a key by its id (key_...)")
    r.add_argument("key_id", metavar="KEY_ID")
    r.set_defaults(func=cmd_revoke)


@contextlib.contextmanager
def _session():
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from shared import db

    try:
        with db.session() as s:
            yield s
    except (OperationalError, ProgrammingError) as err:
        raise UserError("cannot use the api_keys table; run `digits db upgrade` first "
                        f"({type(err).__name__})") from None


def cmd_create(args) -> int:
    from shared import accounts
    from shared.settings import get_settings

    try:
        with _session() as s:
            key, row = accounts.create_key(s, accounts.server_secret(get_settings()),
                                           args.account, args.admin)
            key_id, account = row.id, row.account
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print(key)
    print(f"digits keys: {key_id} for account {account}{' (admin)' if args.admin else ''}; "
          "the key is shown this once, keep it (send it as `Authorization: Bearer KEY`, "
          "DIGITS_API_KEY or --api-key)", file=sys.stderr)
    return 0


def cmd_list(args) -> int:
    from shared import accounts

    with _session() as s:
        rows = [(r.id, r.account, "admin" if r.admin else "", r.created_at, r.revoked_at)
                for r in accounts.list_keys(s)]
    print(f"{'id':<16} {'account':<24} {'admin':<6} {'created':<20} revoked")
    for key_id, account, admin, created, revoked in rows:
        print(f"{key_id:<16} {account:<24} {admin:<6} {created:%Y-%m-%d %H:%M:%S} "
              f"{'' if revoked is None else f'{revoked:%Y-%m-%d %H:%M:%S}'}")
    return 0


def cmd_revoke(args) -> int:
    from shared import accounts

    with _session() as s:
        row = accounts.revoke(s, args.key_id)
        if row is None:
            raise UserError(f"no key {args.key_id!r} (see `digits keys list`)")
        print(f"{row.id} of account {row.account} revoked")
    return 0
