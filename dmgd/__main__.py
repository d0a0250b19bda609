from dmgd.cli import main

main()
