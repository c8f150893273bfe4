"""Tables with every kind of primary key the runner must walk."""

from __future__ import annotations

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
