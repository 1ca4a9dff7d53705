import time

import tower

friend = tower.parameter("friend")
foe = tower.parameter("foe")

for _ in range(5):
    print(f"Hello, {friend}! Boo to {foe}")
    time.sleep(0.5)
