"""The dockyard message bus: envelope codec (sans-IO), trio adapters for pyzmq, clients.

Importing this package is cheap: the codec needs only msgpack; trio and pyzmq are imported
by the modules that use them.
"""
