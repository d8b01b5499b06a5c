from mailintake_devstack.main import main

main()
