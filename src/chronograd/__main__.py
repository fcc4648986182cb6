from chronograd.cli import main

raise SystemExit(main())
