"""``/certificates``: S/MIME certificates with their private keys, and which connections use
them (``/connections/{id}/certificates``)."""

from __future__ import annotations

import uuid
from typing import Annotated

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter, HTTPException, Query, Response, status
from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from mailintake_config_api.auth import Admin, Viewer
from mailintake_config_api.certificates import CertificateError, read_upload
from mailintake_config_api.deps import ResourcesDep, SessionDep
from mailintake_config_api.errors import InvalidInputError
from mailintake_config_api.lookups import connection_or_404, like_pattern
from mailintake_config_api.schemas import (
    CertificateLinks,
    CertificateUpload,
    CertificateView,
    ErrorBody,
    FieldError,
    Offset,
    Page,
    PlainText,
)
from mailintake_shared.db.bindings import private_key_binding
from mailintake_shared.db.dialect import lower
from mailintake_shared.db.models import Certificate, ConnectionCertificate
from mailintake_shared.db.types import utcnow

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 422)
}
router = APIRouter(tags=["certificates"], responses=ERRORS)


def _view(session: Session, row: Certificate) -> CertificateView:
    certificate = x509.load_pem_x509_certificate(row.certificate_pem.encode("ascii"))
    used_by = session.scalars(
        select(ConnectionCertificate.connection_id)
        .where(ConnectionCertificate.certificate_id == row.id)
        .order_by(ConnectionCertificate.connection_id)
    )
    return CertificateView(
        id=row.id,
        name=row.name,
        alias=row.alias,
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        serial=f"{certificate.serial_number:x}",
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        expired=certificate.not_valid_after_utc < utcnow(),
        fingerprint_sha256=row.fingerprint_sha256,
        key_type="rsa" if isinstance(certificate.public_key(), rsa.RSAPublicKey) else "ec",
        connections=list(used_by),
        created_at=row.created_at,
    )


def _get(session: Session, certificate_id: uuid.UUID) -> Certificate:
    row = session.get(Certificate, certificate_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no certificate with this id")
    return row


@router.post(
    "/certificates",
    status_code=status.HTTP_201_CREATED,
    response_model=CertificateView,
    summary="Upload a certificate with its private key",
)
def upload_certificate(
    body: CertificateUpload, session: SessionDep, res: ResourcesDep, _role: Admin
) -> CertificateView:
    try:
        upload = read_upload(
            body.pem.get_secret_value() if body.pem else None,
            body.pkcs12_base64.get_secret_value() if body.pkcs12_base64 else None,
            body.passphrase.get_secret_value() if body.passphrase else None,
        )
    except CertificateError as exc:
        field = "pkcs12_base64" if body.pkcs12_base64 else "pem"
        raise InvalidInputError([FieldError(field=field, rule=str(exc))]) from exc
    if session.scalar(
        select(Certificate.id).where(Certificate.fingerprint_sha256 == upload.fingerprint_sha256)
    ):
        raise HTTPException(status.HTTP_409_CONFLICT, detail="this certificate is already stored")
    row = Certificate(
        id=uuid.uuid4(),
        name=body.name.strip(),
        alias=body.alias.strip() if body.alias else None,
        certificate_pem=upload.certificate_pem,
        fingerprint_sha256=upload.fingerprint_sha256,
        serial=f"{upload.certificate.serial_number:x}",
    )
    row.private_key_enc = res.secrets.encrypt(upload.private_key_pem, private_key_binding(row))
    session.add(row)
    session.flush()
    return _view(session, row)


@router.get(
    "/certificates",
    response_model=Page[CertificateView],
    summary="List and search certificates by name or alias",
)
def list_certificates(
    session: SessionDep,
    _role: Viewer,
    q: Annotated[
        PlainText | None,
        Query(max_length=255, description="Case-insensitive term: name or alias."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> Page[CertificateView]:
    query = select(Certificate)
    if q and q.strip():
        pattern = like_pattern(q)
        query = query.where(
            or_(
                lower(session, Certificate.name).like(pattern, escape="\\"),
                lower(session, Certificate.alias).like(pattern, escape="\\"),
            )
        )
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(Certificate.name, Certificate.id).limit(limit).offset(offset)
    )
    items = [_view(session, row) for row in rows]
    return Page[CertificateView](items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/certificates/{certificate_id}",
    response_model=CertificateView,
    summary="A certificate's details",
)
def get_certificate(
    certificate_id: uuid.UUID, session: SessionDep, _role: Viewer
) -> CertificateView:
    return _view(session, _get(session, certificate_id))


@router.delete(
    "/certificates/{certificate_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a certificate (409 while a connection uses it)",
)
def delete_certificate(certificate_id: uuid.UUID, session: SessionDep, _role: Admin) -> Response:
    row = _get(session, certificate_id)
    used = session.scalar(
        select(func.count()).where(ConnectionCertificate.certificate_id == certificate_id)
    )
    if used:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"{used} connection(s) use this certificate: unlink it from them first",
        )
    session.delete(row)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _linked(session: Session, connection_id: uuid.UUID) -> list[CertificateView]:
    rows = session.scalars(
        select(Certificate)
        .join(ConnectionCertificate, ConnectionCertificate.certificate_id == Certificate.id)
        .where(ConnectionCertificate.connection_id == connection_id)
        .order_by(Certificate.name, Certificate.id)
    )
    return [_view(session, row) for row in rows]


@router.get(
    "/connections/{connection_id}/certificates",
    response_model=list[CertificateView],
    summary="The certificates a connection decrypts its mail with",
)
def connection_certificates(
    connection_id: uuid.UUID, session: SessionDep, _role: Viewer
) -> list[CertificateView]:
    connection_or_404(session, connection_id)
    return _linked(session, connection_id)


@router.put(
    "/connections/{connection_id}/certificates",
    response_model=list[CertificateView],
    summary="Set the certificates a connection decrypts its mail with",
)
def set_connection_certificates(
    connection_id: uuid.UUID, body: CertificateLinks, session: SessionDep, _role: Admin
) -> list[CertificateView]:
    connection_or_404(session, connection_id)
    wanted = set(body.certificate_ids)
    found = set(session.scalars(select(Certificate.id).where(Certificate.id.in_(wanted))))
    if missing := sorted(str(i) for i in wanted - found):
        raise InvalidInputError(
            [
                FieldError(
                    field="certificate_ids", rule=f"no certificate with id {', '.join(missing)}"
                )
            ]
        )
    session.execute(
        delete(ConnectionCertificate).where(ConnectionCertificate.connection_id == connection_id)
    )
    session.add_all(
        ConnectionCertificate(connection_id=connection_id, certificate_id=i) for i in sorted(wanted)
    )
    session.flush()
    return _linked(session, connection_id)
