"""S/MIME through the whole pipeline: certificates uploaded through the API (PEM with an
encrypted key, PKCS#12), attached to a connection, and mail made by ``openssl`` in its
mailbox: each message ends stored, published and flagged as documented."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mailintake_shared.kafka import read_topic_to_end
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic
from tests.api import enable
from tests.conftest import Mailbox
from tests.harness import smime_corpus as corpus
from tests.harness.mail import make_message
from tests.harness.pipeline import Database, Pipeline
from tests.harness.planted import planted
from tests.harness.smime import INNER, Identity, Smime, corrupt_envelope, identity
from tests.integration.conftest import drain, imap_connection_body

pytestmark = pytest.mark.integration

SECRET_WORDS = b"quarterly numbers"


def upload_pem(api: TestClient, who: Identity, passphrase: str | None = None) -> dict[str, Any]:
    pem = (who.certificate_pem + who.key_pem(passphrase)).decode()
    body = {"name": f"{who.name} 2026", "alias": f"{who.name}@example.test", "pem": pem}
    if passphrase:
        body["passphrase"] = passphrase
    answer = api.post("/certificates", json=body)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def published(settings: Settings) -> dict[str, dict[str, Any]]:
    """The mail.stored events by subject (the last of each)."""
    records = read_topic_to_end(settings, Topic.MAIL_STORED)
    return {e["headers"]["subject"]: e for e in (json.loads(r.value) for r in records)}


def test_encrypted_and_signed_mail_ends_in_its_documented_state(
    pipeline: Pipeline,
    api: TestClient,
    db: Database,
    mailbox: Mailbox,
    pipeline_settings: Settings,
) -> None:
    alice, carol, bob = identity("alice"), identity("carol"), identity("bob")
    old, eve = identity("old", expired=True), identity("eve", kind="ec")
    stranger = identity("stranger")
    passphrase = planted("key-passphrase")
    answers: list[str] = []

    alice_cert = upload_pem(api, alice, passphrase)
    p12 = base64.b64encode(carol.pkcs12(passphrase)).decode()
    carol_answer = api.post(
        "/certificates", json={"name": "carol", "pkcs12_base64": p12, "passphrase": passphrase}
    )
    assert carol_answer.status_code == 201, carol_answer.text
    carol_cert = carol_answer.json()
    old_cert, eve_cert = upload_pem(api, old), upload_pem(api, eve)
    assert old_cert["expired"] is True
    assert eve_cert["key_type"] == "ec"
    assert alice_cert["serial"] == f"{alice.certificate.serial_number:x}"
    assert alice_cert["subject"].startswith("1.2.840.113549.1.9.1=alice@example.test")
    # A wrong passphrase, a key of another certificate, the same certificate twice: refused.
    wrong = api.post(
        "/certificates", json={"name": "x", "pkcs12_base64": p12, "passphrase": "wrong"}
    )
    mismatched = api.post(
        "/certificates",
        json={"name": "x", "pem": (bob.certificate_pem + alice.key_pem()).decode()},
    )
    again = api.post(
        "/certificates",
        json={"name": "x", "pem": (alice.certificate_pem + alice.key_pem()).decode()},
    )
    assert (wrong.status_code, mismatched.status_code, again.status_code) == (422, 422, 409)
    assert "does not belong" in mismatched.json()["errors"][0]["rule"]
    answers += [wrong.text, mismatched.text, again.text, carol_answer.text, json.dumps(alice_cert)]

    smime = Smime()
    mail = {
        "to alice": smime.encrypt(INNER, alice, "to alice"),
        "to carol": smime.encrypt(INNER, carol, "to carol"),
        "signed by bob": smime.sign(INNER, bob, "signed by bob"),
        "signed then encrypted": smime.sign_then_encrypt(
            INNER, bob, alice, "signed then encrypted"
        ),
        "to a stranger": smime.encrypt(INNER, stranger, "to a stranger"),
        "to the expired": smime.encrypt(INNER, old, "to the expired"),
        "to eve": smime.encrypt(INNER, eve, "to eve"),
        "corrupt": corrupt_envelope(smime.encrypt(INNER, alice, "corrupt")),
        "plain": make_message(1, subject="plain"),
    }
    mailbox.server.seed(mailbox.username, mail.values())
    created = api.post("/connections", json=imap_connection_body(mailbox))
    connection_id = created.json()["id"]
    ids = [alice_cert["id"], carol_cert["id"], old_cert["id"], eve_cert["id"]]
    linked = api.put(f"/connections/{connection_id}/certificates", json={"certificate_ids": ids})
    assert linked.status_code == 200
    assert len(linked.json()) == 4
    pipeline.start("scheduler", "fetcher", "store")
    assert enable(api, connection_id).status_code == 200
    drain(api, connection_id, db, len(mail), timeout_s=120)

    rows = {
        r.subject: r
        for r in db.rows(
            "SELECT id, subject, raw, unwrapped, smime, problems, sha256 FROM messages"
        )
    }
    assert set(rows) == set(mail)
    found: dict[str, Any] = {s: json.loads(r.smime) if r.smime else None for s, r in rows.items()}
    assert found["to alice"]["decrypted_with"] == alice_cert["id"]
    assert found["to carol"]["decrypted_with"] == carol_cert["id"]
    assert found["signed by bob"]["signature"] == "valid"
    assert found["signed by bob"]["signer"] == "bob@example.test"
    both = found["signed then encrypted"]
    assert both["decrypted_with"] == alice_cert["id"]
    assert both["signature"] == "valid"
    assert "matches the message's recipients" in found["to a stranger"]["problem"]
    assert "'old 2026' expired on" in found["to the expired"]["problem"]
    assert found["to eve"]["decrypted_with"] == eve_cert["id"]  # an EC key: ECDH
    assert "corrupt" in found["corrupt"]["problem"]
    assert found["plain"] is None
    for subject in ("to alice", "to carol", "signed then encrypted", "to eve"):
        assert SECRET_WORDS in bytes(rows[subject].unwrapped)
        assert SECRET_WORDS not in bytes(rows[subject].raw)  # the original, kept as fetched
    for subject in ("to a stranger", "to the expired", "corrupt"):
        assert rows[subject].unwrapped is None
        assert bytes(rows[subject].raw) == mail[subject].replace(b"\n", b"\r\n")
        assert any(p.startswith("S/MIME: ") for p in json.loads(rows[subject].problems))

    # Downstream gets the decrypted form; the API serves both.
    events = published(pipeline_settings)
    assert SECRET_WORDS in base64.b64decode(events["to alice"]["raw_b64"])
    assert events["to alice"]["smime"]["decrypted_with"] == alice_cert["id"]
    assert SECRET_WORDS not in base64.b64decode(events["to a stranger"]["raw_b64"])
    assert events["plain"]["smime"] is None
    message_id = rows["to alice"].id
    served = api.get(f"/messages/{message_id}/raw")
    original = api.get(f"/messages/{message_id}/raw", params={"original": "true"})
    assert SECRET_WORDS in served.content
    assert hashlib.sha256(original.content).hexdigest() == rows["to alice"].sha256
    info = api.get(f"/messages/{message_id}").json()
    assert info["smime"]["decrypted_with"] == alice_cert["id"]

    # What stayed encrypted waits in the queue; with the right certificate attached, a retry
    # decrypts it and announces it again, decrypted.
    queued = api.get("/queue", params={"state": "smime_unopened"}).json()["items"]
    assert sorted(e["subject"] for e in queued) == sorted(
        ["to a stranger", "to the expired", "corrupt"]
    )
    stranger_cert = upload_pem(api, stranger)
    api.put(
        f"/connections/{connection_id}/certificates",
        json={"certificate_ids": [*ids, stranger_cert["id"]]},
    )
    entry = next(e for e in queued if e["subject"] == "to a stranger")
    retried = api.post(f"/queue/message/{entry['id']}/retry").json()
    assert retried["detail"].startswith("decrypted")
    again = api.post(
        f"/queue/message/{next(e['id'] for e in queued if e['subject'] == 'corrupt')}/retry"
    )
    assert again.json()["detail"].startswith("still not decrypted")
    api.app.state.resources.relay.flush()  # type: ignore[attr-defined]
    records = [
        r
        for r in read_topic_to_end(pipeline_settings, Topic.MAIL_STORED)
        if json.loads(r.value)["headers"]["subject"] == "to a stranger"
    ]
    republished = [json.loads(r.value) for r in records]
    assert len(republished) == 2
    # a new announcement under its own id, not a replay; the problem is said once, in smime
    ids = [dict(r.headers)["ce_id"].decode() for r in records]
    assert ids == [str(entry["id"]), f"{entry['id']}/decrypted"]
    assert all("ce_replay" not in dict(r.headers) for r in records)
    assert not [p for e in events.values() for p in e["problems"] if p.startswith("S/MIME")]
    assert events["to the expired"]["smime"]["problem"]
    assert republished[-1]["smime"]["decrypted_with"] == stranger_cert["id"]
    assert SECRET_WORDS in base64.b64decode(republished[-1]["raw_b64"])
    still = api.get("/queue", params={"state": "smime_unopened"}).json()["items"]
    assert sorted(e["subject"] for e in still) == sorted(["to the expired", "corrupt"])

    # A certificate in use cannot be deleted; once unlinked it can. Search by name or alias.
    assert api.delete(f"/certificates/{alice_cert['id']}").status_code == 409
    listed = api.get("/certificates", params={"q": "ALICE@"}).json()
    assert [c["id"] for c in listed["items"]] == [alice_cert["id"]]
    assert listed["items"][0]["connections"] == [connection_id]
    assert (
        api.put(f"/connections/{connection_id}/certificates", json={"certificate_ids": []}).json()
        == []
    )
    assert api.delete(f"/certificates/{alice_cert['id']}").status_code == 204
    answers += [json.dumps(listed)]

    # The key and the passphrase never come back, nor reach a log line or a topic.
    key_line = alice.key_pem(passphrase).decode().splitlines()[1].encode()
    plain_key_line = carol.key_pem().decode().splitlines()[1].encode()
    every_record = b"".join(
        bytes(r.value or b"")
        for topic in Topic
        for r in read_topic_to_end(pipeline_settings, topic)
    )
    for secret in (passphrase.encode(), key_line, plain_key_line):
        assert all(secret.decode() not in text for text in answers)
        assert secret not in pipeline.logs().encode()
        assert secret not in every_record
    pipeline.assert_running()


# A representative set of the corpus (tests/data/smime): each kind of CMS encoding, cipher,
# key transport and agreement, signature and nesting that mail clients send.
CORPUS_SET = [
    "enveloped-3des-ber",
    "enveloped-aes192-ber",
    "enveloped-aes256-gcm-ber",
    "enveloped-oaep-sha256-ber",
    "enveloped-ecdh-sha256kdf-ber",
    "enveloped-keyid",
    "signed-detached-sha1-ber",
    "signed-detached-sha256-ber",
    "signed-opaque-sha256-ber",
    "signed-pss",
    "signed-ecdsa-opaque-ber",
    "signed-then-encrypted-ber",
    "encrypted-then-signed",
    "tampered-detached-content",
    "tampered-signature",
    "enveloped-aria256",
    "signed-dsa",
]


def test_mail_as_clients_write_it_is_decrypted_and_verified(
    pipeline: Pipeline,
    api: TestClient,
    db: Database,
    mailbox: Mailbox,
    pipeline_settings: Settings,
) -> None:
    certificates = {}
    for name in ("alice", "eve"):
        pem = (corpus.certificate_pem(name) + corpus.key_pem(name)).decode()
        answer = api.post("/certificates", json={"name": name, "pem": pem})
        assert answer.status_code == 201, answer.text
        certificates[name] = answer.json()["id"]
    mailbox.server.seed(mailbox.username, [corpus.message(name) for name in CORPUS_SET])
    connection_id = api.post("/connections", json=imap_connection_body(mailbox)).json()["id"]
    linked = api.put(
        f"/connections/{connection_id}/certificates",
        json={"certificate_ids": list(certificates.values())},
    )
    assert linked.status_code == 200
    pipeline.start("scheduler", "fetcher", "store")
    assert enable(api, connection_id).status_code == 200
    drain(api, connection_id, db, len(CORPUS_SET), timeout_s=120)

    rows = {r.subject: r for r in db.rows("SELECT subject, raw, unwrapped, smime FROM messages")}
    assert set(rows) == set(CORPUS_SET)
    events = published(pipeline_settings)
    assert set(events) == set(CORPUS_SET)
    for name in CORPUS_SET:
        row, smime = rows[name], json.loads(rows[name].smime)
        assert smime == events[name]["smime"], name
        announced = base64.b64decode(events[name]["raw_b64"])
        if name in corpus.DECRYPTED or name in corpus.NESTED:
            recipient = corpus.DECRYPTED.get(name) or corpus.NESTED[name][0]
            assert smime["decrypted_with"] == certificates[recipient], name
            assert SECRET_WORDS in bytes(row.unwrapped), name
            assert SECRET_WORDS in announced, name
            assert SECRET_WORDS not in bytes(row.raw), name
        if name in corpus.SIGNED or name in corpus.NESTED:
            signer = corpus.SIGNED.get(name) or corpus.NESTED[name][1]
            assert (smime["signature"], smime["signer"]) == ("valid", f"{signer}@example.test")
            assert smime["problem"] is None, name
        if name in corpus.TAMPERED:
            assert (smime["signature"], smime["problem"]) == ("invalid", corpus.TAMPERED[name])
        if name in corpus.UNSUPPORTED:
            assert smime["problem"] == corpus.UNSUPPORTED[name], name
    assert rows["enveloped-aria256"].unwrapped is None
    assert json.loads(rows["enveloped-aria256"].smime)["encrypted"] is True
    # What stays encrypted is in the queue, with the cipher named.
    queued = api.get("/queue", params={"state": "smime_unopened"}).json()["items"]
    assert [e["subject"] for e in queued] == ["enveloped-aria256"]
    assert corpus.UNSUPPORTED["enveloped-aria256"] in queued[0]["reason"]
    pipeline.assert_running()
