import humanize

for size in (1_000, 1_500_000, 3_000_000_000):
    print(f"{size} bytes is {humanize.naturalsize(size)}")
