from tabulate import tabulate

import tower

rows = [["app", tower.info.app_name() or "local"], ["environment", tower.info.environment()]]
print(tabulate(rows, headers=["what", "value"]))
