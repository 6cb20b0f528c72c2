"""Row ids: random UUID4s from a shared buffer, never repeated within or across processes."""

from __future__ import annotations

import os
import threading
import uuid

from storage.models import new_id


def test_ids_are_uuid4_hex_and_unique_across_threads() -> None:
    found: list[str] = []
    lock = threading.Lock()

    def take() -> None:
        mine = [new_id() for _ in range(2_000)]
        with lock:
            found.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(found)) == len(found) == 16_000
    assert all(len(i) == 32 and uuid.UUID(i).version == 4 for i in found)


def test_a_forked_child_does_not_reuse_the_parents_buffer() -> None:
    new_id()  # the parent's buffer now holds ids it has not given out yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave at once
        os.write(write, "".join(new_id() for _ in range(4)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    child_ids = {child[i : i + 32] for i in range(0, len(child), 32)}
    parent_ids = {new_id() for _ in range(4)}
    assert len(child_ids) == 4
    assert not child_ids & parent_ids
