"""``mailintake-topics``: create the missing topics, then check every topic against its spec
(partitions, ``cleanup.policy``, ``retention.ms``). Exit status 1 when one differs.

For clusters where the services may not create topics (``MAILINTAKE_CREATE_TOPICS=false``) or
where an operator owns them (Strimzi: ``deploy/examples/strimzi``): run it before the first
rollout, and after changing ``MAILINTAKE_TOPIC_PARTITIONS``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from mailintake_shared.kafka import ensure_topics
from mailintake_shared.settings import Settings
from mailintake_shared.topics import TOPIC_SPECS, topic_name


@dataclass(frozen=True)
class TopicCheck:
    name: str
    partitions: int | None  # None: the topic does not exist
    configs: dict[str, str]  # the spec's configs, as the broker reports them
    problems: list[str]


def check_topics(settings: Settings) -> list[TopicCheck]:
    admin = KafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.kafka_client_id}-admin",
    )
    try:
        names = [topic_name(settings.topic_prefix, spec.topic) for spec in TOPIC_SPECS]
        described = {t["name"]: t for t in admin.describe_topics(names) if not t["error_code"]}
        configs = _configs(admin, [n for n in names if described.get(n, {}).get("partitions")])
    finally:
        admin.close()
    checks = []
    for spec, name in zip(TOPIC_SPECS, names, strict=True):
        partitions = len(described.get(name, {}).get("partitions") or []) or None
        actual = configs.get(name, {})
        problems = []
        if partitions is None:
            problems.append("missing")
        elif partitions != settings.topic_partitions:
            problems.append(f"{partitions} partitions, settings say {settings.topic_partitions}")
        for key, wanted in spec.configs().items():
            if key in actual and actual[key] != wanted:
                problems.append(f"{key}={actual[key]}, should be {wanted}")
        checks.append(TopicCheck(name, partitions, actual, problems))
    return checks


def _configs(admin: KafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    """Each topic's configs; empty when the broker does not answer DescribeConfigs."""
    if not names:
        return {}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    try:
        responses = admin.describe_configs(resources)
    except Exception:  # a broker without DescribeConfigs: only partitions are checked
        return {}
    by_topic = responses.get("topic", {}) if isinstance(responses, dict) else {}
    return {name: {k: str(v) for k, v in entries.items()} for name, entries in by_topic.items()}


def main() -> None:
    from mailintake_shared.logging import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, service="topics", stream=sys.stderr)
    created = ensure_topics(settings)
    checks = check_topics(settings)
    for check in checks:
        state = "created" if check.name in created else "ok"
        state = "; ".join(check.problems) if check.problems else state
        policy = check.configs.get("cleanup.policy", "?")
        print(f"{check.name:40} {check.partitions or '-':>4} partitions  {policy:8} {state}")
    sys.exit(1 if any(check.problems for check in checks) else 0)
