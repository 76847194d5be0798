from mpush.cli import main

main()
