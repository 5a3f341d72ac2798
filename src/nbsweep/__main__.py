from nbsweep.cli import main

main()
