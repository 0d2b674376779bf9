from synthaug.cli import main

raise SystemExit(main())
