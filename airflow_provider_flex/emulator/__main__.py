import sys

from airflow_provider_flex.emulator.server import main

sys.exit(main())
