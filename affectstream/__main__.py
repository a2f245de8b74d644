from affectstream.cli.main import main

raise SystemExit(main())
