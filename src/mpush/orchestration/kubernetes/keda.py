"""A deployment's autoscale table as a KEDA ``ScaledObject``, and its Redis password as a KEDA
``TriggerAuthentication``.

The trigger is KEDA's ``redis`` list scaler — ``redis-cluster`` for a Redis Cluster — on the
deployment's queue: ``listName`` = ``queue``, ``listLength`` = ``target`` (HPA then wants
ceil(length / target) replicas, rcontrol's own rule), ``activationListLength`` = ``activation``;
``min`` and ``max`` bound the count, and the two windows are HPA's stabilization windows
(``advanced.horizontalPodAutoscalerConfig.behavior``). A password reaches KEDA only as a
reference: the trigger's ``authenticationRef`` names a TriggerAuthentication whose
``secretTargetRef`` points at the Secret the pods read it from.

``response_time`` has no counterpart in KEDA's redis scalers: it is not exported (a note says
so; docs/kubernetes.md shows a Prometheus trigger that could stand in).
"""

from __future__ import annotations

import re
from typing import Any

from mpush.orchestration.kubernetes.declarations import Autoscale
from mpush.orchestration.kubernetes.redis import Endpoint, SecretRef
from mpush.orchestration.kubernetes.workloads import Target, selector

__all__ = ["USERNAME_VARIABLE", "authentication_name", "scaled_object", "trigger_authentication"]

# The variable of a pod's env that holds the queue Redis's user name, for usernameFromEnv.
USERNAME_VARIABLE = "REDIS_USERNAME"


def authentication_name(secret: SecretRef) -> str:
    """The TriggerAuthentication of ``secret``: one per Secret key the triggers use."""
    name = secret.name if secret.key == "password" else f"{secret.name}-{secret.key}"
    return re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-.")[:253]


def scaled_object(
    name: str, autoscale: Autoscale, queues: Endpoint, target: Target
) -> dict[str, Any]:
    """The ScaledObject of deployment ``name``, whose queue is on ``queues``."""
    assert autoscale.queue is not None, "a ScaledObject needs a queue"
    assert autoscale.target is not None, "Autoscale requires a target with a queue"
    metadata: dict[str, str] = {
        ("addresses" if queues.cluster else "address"): queues.address,
        "listName": autoscale.queue,
        "listLength": str(autoscale.target),
        "activationListLength": str(autoscale.activation),
    }
    if queues.database and not queues.cluster:
        metadata["databaseIndex"] = str(queues.database)
    if queues.tls:
        metadata["enableTLS"] = "true"
    if queues.username:
        metadata["usernameFromEnv"] = USERNAME_VARIABLE
    trigger: dict[str, Any] = {
        "type": "redis-cluster" if queues.cluster else "redis",
        "metadata": metadata,
    }
    if queues.secret is not None:
        trigger["authenticationRef"] = {"name": authentication_name(queues.secret)}
    up, down = autoscale.windows
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": target.metadata(name, labels=selector(name)),
        "spec": {
            "scaleTargetRef": {"name": name},
            "minReplicaCount": autoscale.min,
            "maxReplicaCount": autoscale.max,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleUp": {"stabilizationWindowSeconds": up},
                        "scaleDown": {"stabilizationWindowSeconds": down},
                    }
                }
            },
            "triggers": [trigger],
        },
    }


def trigger_authentication(secret: SecretRef, target: Target) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": target.metadata(
            authentication_name(secret), labels={"app.kubernetes.io/part-of": "mpush"}
        ),
        "spec": {
            "secretTargetRef": [{"parameter": "password", "name": secret.name, "key": secret.key}]
        },
    }
