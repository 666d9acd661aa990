from mis.cli.entry import main

main()
