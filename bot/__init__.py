"""The GitHub App webhook server: labels new issues and records maintainers' corrections.

It may import ``training`` (store, registry format, settings); ``training`` never imports it.
"""
