"""Topic creation shared by the local broker and the embedding publisher."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from kafka.errors import TopicAlreadyExistsError

if TYPE_CHECKING:  # built by stream.kafka.clients only
    from kafka import KafkaAdminClient


def create_missing_topics(
    admin: KafkaAdminClient, request: Mapping[str, Mapping[str, object]], timeout_ms: int
) -> dict[str, object]:
    """Create the topics in ``request`` (name -> create-topic fields) that do not exist yet.

    Returns the failures by topic name; when there are none, waits until every partition
    of every topic has a leader. Topics that already exist are left as they are.
    """
    response = admin.create_topics(dict(request), raise_errors=False)
    failed: dict[str, object] = {
        topic["name"]: topic["error_message"] or topic["error_code"]
        for topic in response["topics"]
        if topic["error_code"] not in (0, TopicAlreadyExistsError.errno)
    }
    if not failed:
        admin.wait_for_topics(list(request), timeout_ms=timeout_ms)
    return failed
