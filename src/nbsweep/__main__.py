from nbsweep.cli.main import main

main()
