from immersions.cli import main

raise SystemExit(main())
