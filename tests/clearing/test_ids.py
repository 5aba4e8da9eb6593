"""Application-made ids: valid UUIDv7, equal to their parsed text, in the order they were made."""

from __future__ import annotations

import pickle
import uuid

from clearing.core.ids import new_id


def test_ids_are_rfc_9562_version_7_and_behave_like_parsed_uuids() -> None:
    made = [new_id() for _ in range(5000)]
    for value in made[:50]:
        parsed = uuid.UUID(str(value))
        assert value == parsed
        assert hash(value) == hash(parsed)
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert pickle.loads(pickle.dumps(value)) == value
    assert len(set(made)) == len(made)


def test_ids_sort_in_the_order_they_were_made() -> None:
    made = [new_id() for _ in range(20000)]
    assert made == sorted(made)
