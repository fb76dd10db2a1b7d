"""Remote dreaming: the dream engine on a GPU server, everything else on the performing laptop.

- protocol: versioned msgpack messages with raw array buffers (never pickle), size limits;
- keys: CURVE key pairs (`immersions keys generate`) and the authorized-clients folder;
- server: `immersions serve`, DreamEngines (one per GPU, or N on the CPU) behind a ROUTER;
- client: `RemoteEngine`, the DreamEngine interface over a DEALER, reconnecting by itself;
- bench: `immersions bench remote`; cli: the subcommands and the perform engine factory.
See docs/remote.md.
"""
