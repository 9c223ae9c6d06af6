"""What people run on a built dataset: the ``imgshard`` command (cli.py) and what it calls.

verify.py (does the dataset still match its sources), export.py (a
self-contained copy), figures.py (the report's figures), demo.py (the demo
image set of ``make run``).
"""
