"""Risk rules over snapshots: findings, value at risk, the exploited-spender list, prices.

``model`` holds the output values, ``exploits`` the known-exploited spenders, ``rules`` the
pure evaluation and ``prices`` the USD price port and its Spot Price API adapter. Import from
those modules: this package re-exports nothing, because ``monitor.config`` imports
``monitor.risk.exploits`` and ``monitor.risk.rules`` imports ``monitor.config``.
"""
