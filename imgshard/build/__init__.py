"""One shard job: its images decoded into shared memory, assembled into a part file, indexed, committed.

shard.py's ``build_shard`` is the entry point and calls, in turn: reuse.py
(plan), workers.py (decode), assemble.py with part.py (assemble), index.py
(index and commit). No module here calls back into the one that called it.
"""
