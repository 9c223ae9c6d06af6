"""How one image file becomes one row of the dataset: its header, its size and geometry, its decode, its masks.

Below every stage that makes or checks pixels: the plan reads headers
(plan/probe.py), the shard job's workers decode (build/workers.py), ``imgshard
verify`` decodes again (tools/verify.py). A change to any module here changes
the rows they make, so the shard jobs' reuse fingerprint covers this whole
folder (build/reuse.py): an edit here rebuilds every shard once.
"""
