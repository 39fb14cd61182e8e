"""Risk rules over snapshots: findings, value at risk, the exploited-spender list, prices.

The pure core of the risk side: ``model`` holds what the rules are given (``RuleSettings``,
``KnownSpender``, ``Suppression``) and what they produce (findings, exposures), ``exposure``
the exact value at risk, ``rules`` the evaluation and ``incremental`` the same evaluation in
proportion to what changed, ``exploits`` the exploited-spender list and the validation of its
documents, ``prices`` the USD price port. Nothing here imports ``monitor.config`` or an
adapter, or does I/O (``tests/test_layers.py`` holds it to that): ``monitor.config`` builds
the settings and reads the exploit files, and the Spot Price adapter is
``monitor.oneinch.prices``.
"""
