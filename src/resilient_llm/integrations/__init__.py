"""Strategies that put users' own retry code under the call's deadline, each an optional extra.

``resilient_llm.integrations.tenacity`` (``pip install 'resilient-llm[tenacity]'``) plugs the
library's deadline, backoff and classification into tenacity. Nothing here is imported by
``import resilient_llm``: import the integration you use.
"""
