"""Remote dreaming: the dream engine on a GPU server, everything else on the performing laptop.

- protocol: versioned msgpack messages with raw array buffers (never pickle), size limits;
  every command that changes a dream, and every frame, names its deck (A or B);
- keys: CURVE key pairs (`immersions keys generate`) and the authorized-clients folder;
- server: `immersions serve`, DreamEngines (one per GPU, or N on the CPU, for each deck)
  behind a ROUTER;
- client: `RemoteEngine`, the DreamEngine interface over a DEALER, reconnecting by itself
  (deck A and the link), and `RemoteDeck`, deck B on the same link;
`immersions bench remote` lives in bench/remote.py, the subcommands in cli/remote.py.
See docs/remote.md.
"""
