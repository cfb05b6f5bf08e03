"""Adapters that let other evaluation frameworks drive evalkit's models.

Each integration imports its framework, which is an optional extra; nothing else in evalkit
imports this package, so evalkit itself never needs those frameworks installed.
"""
