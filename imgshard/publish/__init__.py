"""The gather rule's stage: the shards' indexes into one dataset file, published as a snapshot.

gather.py writes the file (a virtual dataset, or a copy); snapshots.py makes
it the snapshot ``results/<name>.h5`` names, and removes the superseded
snapshots and part files no reader holds.
"""
