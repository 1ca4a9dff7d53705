"""Identity tokens for other systems: `GET /v1/whoami` and `/.well-known/jwks.json`.

Session tokens are HS256 (only this server can check them). An identity token is
RS256, signed by a server key kept in the database like the secrets key (see
`services.vault`), so any replica signs with the same key and anyone can verify
with the public keys at `/.well-known/jwks.json`.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt.algorithms import RSAAlgorithm

from tower.core import errors
from tower.server.services import auth, vault
from tower.server.services.context import Principal, ServerContext, read_session
from tower.server.store import models
from tower.server.store.types import utcnow

IDENTITY_KEY_NAME = "identity-jwt"
IDENTITY_TOKEN_TTL = timedelta(hours=1)
ALGORITHM = "RS256"


@dataclass(frozen=True)
class IdentityToken:
    token: str
    expires_at: datetime


def _signing_key(ctx: ServerContext) -> RSAPrivateKey:
    return vault.server_private_key(ctx, IDENTITY_KEY_NAME)


def key_id(key: RSAPrivateKey) -> str:
    """A stable id for the key: a hash of its public half (so a rotated key gets a new id)."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()[:16]).rstrip(b"=").decode()


def jwks(ctx: ServerContext) -> dict[str, Any]:
    key = _signing_key(ctx)
    public = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {"keys": [{**public, "kid": key_id(key), "use": "sig", "alg": ALGORITHM}]}


def whoami(ctx: ServerContext, principal: Principal) -> IdentityToken:
    """An RS256 identity token for the calling user, acting in the caller's account."""
    if principal.user_id is None:
        raise errors.Forbidden("This credential does not belong to a user, so it has no identity.")
    with read_session(ctx) as session:
        user = session.get(models.User, principal.user_id)
    now = utcnow()
    expires_at = now + IDENTITY_TOKEN_TTL
    claims = {
        "iss": ctx.settings.resolved_public_url,
        "aud": ctx.settings.resolved_public_url,
        "sub": str(user.id),
        "email": user.email,
        "name": f"{user.first_name} {user.last_name}".strip() or user.email,
        auth.ACCOUNT_CLAIM: str(principal.account_id),
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    key = _signing_key(ctx)
    token = jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": key_id(key)})
    return IdentityToken(token, expires_at.replace(microsecond=0))
