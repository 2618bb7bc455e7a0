from siamcli.cli.app import main

main()
