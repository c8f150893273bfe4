"""Tables with every kind of primary key the runner must walk."""

from __future__ import annotations

import random
import uuid

from django.db import models


class CounterFields(models.Model):
    # `counter` counts how many times a backfill processed the row: exactly-once means 1.
    counter = models.IntegerField(default=0)
    needs_work = models.BooleanField(default=True)
    note = models.CharField(max_length=50, blank=True, default="")

    class Meta:
        abstract = True


class Item(CounterFields):
    id = models.AutoField(primary_key=True)


class BigItem(CounterFields):
    id = models.BigAutoField(primary_key=True)


class UUIDItem(CounterFields):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)


class CodeItem(CounterFields):
    code = models.CharField(max_length=20, primary_key=True)


class Record(models.Model):
    """Every field type a backfill writes, to check values round-trip exactly."""

    text = models.CharField(max_length=200, null=True, blank=True)
    body = models.TextField(null=True, blank=True)
    number = models.IntegerField(null=True)
    big = models.BigIntegerField(null=True)
    amount = models.DecimalField(max_digits=12, decimal_places=4, null=True)
    ratio = models.FloatField(null=True)
    flag = models.BooleanField(null=True)
    day = models.DateField(null=True)
    moment = models.DateTimeField(null=True)
    data = models.JSONField(null=True)
    token = models.UUIDField(null=True)
    # Never written by the backfills: must stay as it was.
    untouched = models.CharField(max_length=50, default="keep me")
    done = models.BooleanField(default=False)


class TenantItem(CounterFields):
    """A composite primary key: many rows share a tenant, numbers repeat across tenants."""

    pk = models.CompositePrimaryKey("tenant", "number")
    tenant = models.CharField(max_length=20)
    number = models.IntegerField()


#: Tenants that sort differently as text and as numbers, by case and by accent; no two equal
#: under a case- and accent-insensitive collation (MariaDB's default), nor with padding.
TENANTS = ("a", "t10", "t2", "T3", "Zed", "é", "10")
INT_EXTREMES = (-(2**31), -1, 0, 1, 2**31 - 1)


def tenant_keys(count: int, seed: int = 16) -> list[tuple[str, int]]:
    """*count* distinct (tenant, number) keys in random order: most rows share a few tenants
    (one tenant has a single row); numbers from -2**31 to 2**31 - 1, half of them small, so
    the same numbers recur under several tenants."""
    rng = random.Random(seed)
    *many, single = TENANTS
    weights = [8, 4, 2, 2, 1, 1][: len(many)]
    keys = {(single, 7)}
    per_tenant: dict[str, set[int]] = {tenant: set() for tenant in many}
    for tenant in rng.choices(many, weights=weights, k=count - 1):
        numbers = per_tenant[tenant]
        extremes = [n for n in INT_EXTREMES if n not in numbers]
        number = extremes[0] if extremes else None
        while number is None or number in numbers:
            small = rng.random() < 0.5
            number = rng.randint(-50, 2000) if small else rng.randint(-(2**31), 2**31 - 1)
        numbers.add(number)
        keys.add((tenant, number))
    ordered = sorted(keys)
    rng.shuffle(ordered)
    return ordered[:count]


class KeyedItem(CounterFields):
    """An integer primary key, walked by another unique key (``chunk_by``): (group, code).

    ``group`` is an SQL reserved word, so every statement must quote it."""

    id = models.AutoField(primary_key=True)
    group = models.IntegerField()
    code = models.CharField(max_length=20)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["group", "code"], name="testapp_keyeditem_group_code")
        ]
