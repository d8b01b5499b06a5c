"""A downstream handler of ``mail.stored``: prints each new message, exactly as a ticketing,
CRM or automation service would receive it.

    MAILINTAKE_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 \\
    python examples/consume_mail_stored.py --group my-handler [--max-messages N]

Records are routed on their ``ce_type`` header (CloudEvents, docs/topics.md): a version this
handler does not know is skipped, not misread. Delivery is at least once: keep what you
processed keyed by ``message_id`` (here a set; in a real handler, a unique key in your own
database) so that a re-delivery or an operator's replay is harmless. Large messages arrive by
reference: fetch ``raw_path`` from the config API with a reader token.
"""

from __future__ import annotations

import argparse
import base64
import email
import email.policy

from mailintake_shared.events import MailStored
from mailintake_shared.kafka import make_consumer
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic

HANDLED_TYPE = b"mailintake.mail.stored.v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--group",
        default="example-handler",
        help="your consumer group (prefixed with MAILINTAKE_TOPIC_PREFIX)",
    )
    parser.add_argument("--max-messages", type=int, default=0, help="stop after N (0: never)")
    args = parser.parse_args()

    consumer = make_consumer(Settings(), args.group, [Topic.MAIL_STORED])
    handled: set[int] = set()
    try:
        while not args.max_messages or len(handled) < args.max_messages:
            for records in consumer.poll(timeout_ms=1000).values():
                for record in records:
                    if dict(record.headers).get("ce_type") != HANDLED_TYPE:
                        continue  # another version or kind of event: not this handler's
                    event = MailStored.model_validate_json(record.value)
                    if event.message_id in handled:
                        continue  # a re-delivery: already handled
                    body = "(by reference: GET " + event.raw_path + ")"
                    if event.raw_b64 is not None:
                        parsed = email.message_from_bytes(
                            base64.b64decode(event.raw_b64), policy=email.policy.default
                        )
                        part = parsed.get_body(preferencelist=("plain",))
                        text = part.get_content() if part else "(no text part)"
                        body = " ".join(text.split())[:60]
                    print(
                        f"#{event.message_id} from {event.headers.from_!r} "
                        f"subject {event.headers.subject!r}: {body}",
                        flush=True,
                    )
                    handled.add(event.message_id)
            consumer.commit()  # after handling: a crash re-delivers, never skips
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
