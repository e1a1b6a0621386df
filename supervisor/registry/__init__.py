"""The registry client: pull, push and login against OCI distribution registries.

Modules, from pure to I/O:

    reference.py   image references normalised as docker does (pure)
    manifest.py    media types, manifest/index parsing, platform choice (pure)
    auth.py        WWW-Authenticate challenges, scopes, the credentials file
    layout.py      the OCI image layout that a pull writes and a push reads (files)
    progress.py    per-blob progress events and the terminal renderer
    session.py     one registry's connection over HTTP (httpx on trio): scheme, auth, retry on 401
    client.py      one registry's distribution API on a session: manifests, blobs, login
    transfer.py    pull, push and login built on the client

Importing this package imports no HTTP library: httpx is imported by session.py and
client.py alone, which only pull/push/login load. See docs/registry.md.
"""
