"""Authentication: API keys, session JWTs, run tokens and runner credentials."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import bindparam, select, update

from tower.core import certificates, crypto, errors, roles, scopes
from tower.server.services import runner_credentials
from tower.server.services.context import Principal, RunnerPrincipal, ServerContext, read_session
from tower.server.store import models
from tower.server.store.types import utcnow

JWT_ALGORITHM = "HS256"
ACCOUNT_CLAIM = "https://tower.dev/aid"  # the claim the official CLI keys teams by
API_KEY_PREFIX = "sk-"
RUNNER_TOKEN_PREFIX = runner_credentials.RUNNER_TOKEN_PREFIX
RUN_TOKEN_TTL = timedelta(days=2)
LAST_USED_GRANULARITY = timedelta(minutes=1)


def _signing_key(ctx: ServerContext) -> bytes:
    return ctx.keys.derive("session-jwt")


def issue_jwt(
    ctx: ServerContext,
    *,
    account_id: uuid.UUID,
    user_id: uuid.UUID | None,
    ttl: timedelta,
    session_id: uuid.UUID | None = None,
    run_id: uuid.UUID | None = None,
) -> str:
    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "iss": ctx.settings.resolved_public_url,
        "sub": str(user_id) if user_id else None,
        ACCOUNT_CLAIM: str(account_id),
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
    }
    if session_id:
        claims["sid"] = str(session_id)
    if run_id:
        claims["rid"] = str(run_id)
    return jwt.encode(claims, _signing_key(ctx), algorithm=JWT_ALGORITHM)


def authenticate(ctx: ServerContext, *, api_key: str | None, bearer: str | None) -> Principal:
    """Resolve credentials to a principal or raise Unauthenticated."""
    token = api_key or bearer
    if not token:
        raise errors.Unauthenticated()
    if token.startswith(API_KEY_PREFIX):
        return _authenticate_api_key(ctx, token)
    return _authenticate_jwt(ctx, token)


def recently_authenticated(
    ctx: ServerContext, *, api_key: str | None, bearer: str | None
) -> Principal | None:
    """The principal of an API key that authenticated within the last second and was
    not revoked, expired or changed since (services.credential_cache); None: ask
    `authenticate`. Reads memory only, so the request needs no worker thread for it."""
    token = api_key or bearer
    if not token or not token.startswith(API_KEY_PREFIX):
        return None
    return ctx.credentials.get(_api_key_cache_key(token), utcnow())


def recently_authenticated_runner(
    ctx: ServerContext, bearer: str | None, client_certificate: str | None = None
) -> RunnerPrincipal | None:
    """`recently_authenticated` for runner tokens (and their client certificate)."""
    if not bearer or not bearer.startswith(RUNNER_TOKEN_PREFIX):
        return None
    return ctx.credentials.get(_runner_cache_key(bearer, client_certificate), utcnow())


def _api_key_cache_key(key: str) -> str:
    return "api_key:" + crypto.hash_token(key)


def _runner_cache_key(token: str, client_certificate: str | None) -> str:
    certificate = crypto.hash_token(client_certificate) if client_certificate else ""
    return f"runner:{crypto.hash_token(token)}:{certificate}"


# Built once (every request authenticates): the key's columns, its account's name and
# its owner's role in that account. The role is read afresh on every request: a member
# removed from a team loses their team keys at once.
_API_KEY_ROW = (
    select(
        models.ApiKey.id,
        models.ApiKey.account_id,
        models.ApiKey.user_id,
        models.ApiKey.identifier,
        models.ApiKey.scopes,
        models.ApiKey.last_used_at,
        models.ApiKey.expires_at,
        models.ApiKey.service_account_id,
        models.Account.name,
        models.Membership.role,
        models.ServiceAccount.role,
    )
    .join(models.Account, models.Account.id == models.ApiKey.account_id)
    .outerjoin(
        models.Membership,
        (models.Membership.account_id == models.ApiKey.account_id)
        & (models.Membership.user_id == models.ApiKey.user_id),
    )
    .outerjoin(
        models.ServiceAccount,
        models.ServiceAccount.id == models.ApiKey.service_account_id,
    )
    .where(models.ApiKey.key_hash == bindparam("key_hash"))
)


def _authenticate_api_key(ctx: ServerContext, key: str) -> Principal:
    now = utcnow()
    generation = ctx.credentials.generation
    # Every request authenticates: a plain read, so it never waits for SQLite's write lock.
    with read_session(ctx) as session:
        row = session.execute(_API_KEY_ROW, {"key_hash": crypto.hash_token(key)}).first()
    if row is None:
        raise errors.Unauthenticated("The API key is not valid. Check TOWER_API_KEY.")
    (key_id, account_id, user_id, identifier, key_scopes, last_used_at, expires_at) = row[:7]
    service_account_id, account_name, member_role, service_account_role = row[7:]
    if expires_at and expires_at <= now:
        raise errors.Unauthenticated("The API key has expired. Create a new one.")
    role = service_account_role if service_account_id else member_role
    if role is None:
        raise errors.Unauthenticated(
            f"The owner of this API key is no longer a member of {account_name!r}, so the "
            "key no longer works. Use a key of an account you belong to."
        )
    # Writing on every request would serialize all reads on SQLite; a minute is enough.
    if not last_used_at or now - last_used_at > LAST_USED_GRANULARITY:
        with ctx.sessions.begin() as session:
            session.execute(
                update(models.ApiKey).where(models.ApiKey.id == key_id).values(last_used_at=now)
            )
    principal = Principal(
        account_id,
        account_name,
        user_id,
        "api_key",
        scopes=scopes.parse_scopes(key_scopes),
        role=role,
        service_account_id=service_account_id,
        credential=identifier,
    )
    ctx.credentials.put(_api_key_cache_key(key), principal, expires_at, generation)
    return principal


def _authenticate_jwt(ctx: ServerContext, token: str) -> Principal:
    try:
        claims = jwt.decode(token, _signing_key(ctx), algorithms=[JWT_ALGORITHM])
        account_id = uuid.UUID(claims[ACCOUNT_CLAIM])
    except (jwt.PyJWTError, KeyError, ValueError) as exc:
        raise errors.Unauthenticated(
            "The session token is invalid or expired. Log in again (`tower up` or `tower login`)."
        ) from exc
    user_id = uuid.UUID(claims["sub"]) if claims.get("sub") else None
    session_id = uuid.UUID(claims["sid"]) if "sid" in claims else None
    with read_session(ctx) as session:
        account = session.get(models.Account, account_id)
        if account is None:
            raise errors.Unauthenticated("The account of this token no longer exists.")
        if session_id is not None:
            row = session.get(models.Session, session_id)
            if row is None or row.revoked_at is not None:
                raise errors.Unauthenticated("This session was signed out. Log in again.")
            if row.expires_at <= utcnow():
                raise errors.Unauthenticated("This session expired. Log in again.")
        # A team JWT names its account in the `aid` claim; it is honoured only while
        # its user is still a member there, and with the role they have now.
        membership = session.get(models.Membership, (account_id, user_id)) if user_id else None
        if user_id and membership is None:
            raise errors.Unauthenticated("You are no longer a member of this account.")
    run_id = uuid.UUID(claims["rid"]) if "rid" in claims else None
    kind = "run" if run_id else "session"
    role = roles.RUN_ROLE if run_id else membership.role if membership else None
    return Principal(
        account_id, account.name, user_id, kind, run_id=run_id, role=role, session_id=session_id
    )


_RUNNER_CREDENTIAL = select(models.RunnerCredential).where(
    models.RunnerCredential.token_hash == bindparam("token_hash")
)


def authenticate_runner(
    ctx: ServerContext, bearer: str | None, client_certificate: str | None = None
) -> RunnerPrincipal:
    """The runner credential of a token; with a client certificate (the mutual-TLS
    listener verified it against our CA), it must be the one issued with the token."""
    if not bearer or not bearer.startswith(RUNNER_TOKEN_PREFIX):
        raise errors.Unauthenticated(
            "Runner endpoints need a runner token (rt-…) in `Authorization: Bearer`."
        )
    generation = ctx.credentials.generation
    with read_session(ctx) as session:
        credential = session.scalar(_RUNNER_CREDENTIAL, {"token_hash": crypto.hash_token(bearer)})
    if credential is None:
        raise errors.Unauthenticated(
            "The runner token is not valid. Mint new credentials with `tower runners "
            "credentials` (or give the runner TOWER_API_KEY so it mints its own)."
        )
    if credential.revoked_at is not None:
        raise errors.Unauthenticated(
            "The runner token was revoked. Mint new credentials with `tower runners credentials`."
        )
    if runner_credentials.expired(credential, utcnow()):
        raise errors.Unauthenticated(
            f"The runner token expired at {credential.expires_at:%Y-%m-%d %H:%M:%S} UTC. "
            "Mint new credentials with `tower runners credentials` (runners rotate theirs "
            "before expiry while they run)."
        )
    if client_certificate is not None and not _certificate_matches(credential, client_certificate):
        raise errors.Unauthenticated(
            "The client certificate was not issued with this runner token: use the "
            "certificate, key and token of the same `tower runners credentials` output."
        )
    principal = RunnerPrincipal(credential.id, credential.account_id, credential.rotated_from_id)
    cache_key = _runner_cache_key(bearer, client_certificate)
    ctx.credentials.put(cache_key, principal, credential.expires_at, generation)
    return principal


def _certificate_matches(credential: models.RunnerCredential, certificate_pem: str) -> bool:
    try:
        serial = certificates.serial_hex(
            certificates.load_certificate(certificate_pem).serial_number
        )
    except errors.InvalidInput:
        return False
    return credential.certificate_serial is not None and crypto.tokens_equal(
        serial, credential.certificate_serial
    )


def mint_runner_credential(
    ctx: ServerContext, *, name: str, account_id: uuid.UUID | None, ttl: timedelta | None = None
) -> str:
    """Create a runner token (with its client certificate); only its hash is stored."""
    return runner_credentials.mint(ctx, name=name, account_id=account_id, ttl=ttl).token


EMBEDDED_RUNNER_NAME = "embedded-runner"


def rotate_embedded_runner_credential(ctx: ServerContext) -> runner_credentials.IssuedCredential:
    """A fresh credential for `tower up`'s own runner; earlier ones stop working."""
    with ctx.sessions.begin() as session:
        session.execute(
            update(models.RunnerCredential)
            .where(
                models.RunnerCredential.name == EMBEDDED_RUNNER_NAME,
                models.RunnerCredential.revoked_at.is_(None),
            )
            .values(revoked_at=utcnow())
        )
    return runner_credentials.mint(ctx, name=EMBEDDED_RUNNER_NAME, account_id=None)
