/*
Copyright 2026 The annshard Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package controllers

import (
	"context"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
)

// Defaults of the schema, repeated for objects that did not go through the API server
// (unit tests, a client-side dry run).
const (
	defaultHedgeAfterPercentile = 95
	defaultCacheEntries         = 10000
)

// routerPodConfig is every setting that shapes a router pod; its hash goes on the pod
// template so that an edit of any of them rolls the routers.
type routerPodConfig struct {
	Image      string
	PullPolicy corev1.PullPolicy
	Router     annv1alpha1.RouterSpec
}

func routerConfigHash(idx *annv1alpha1.AnnIndex) string {
	r := idx.Spec.Router
	r.Replicas = 0 // scaling the routers is not a reason to restart them
	return configHash(routerPodConfig{Image: idx.Spec.ShardServer.Image, PullPolicy: idx.Spec.ShardServer.ImagePullPolicy, Router: r})
}

// routerArgs are the flags of `shardserver route`: Kubernetes mode (--index,
// --namespace), so the router watches the routing ConfigMap and the shard pods.
func routerArgs(idx *annv1alpha1.AnnIndex) []string {
	r := idx.Spec.Router
	return []string{
		listenArg(),
		"--index=" + idx.Name,
		"--namespace=" + idx.Namespace,
		"--policy=" + string(r.LoadBalancing),
		"--hedge-percentile=" + strconv.Itoa(int(ptr.Deref(r.HedgeAfterPercentile, defaultHedgeAfterPercentile))),
		"--cache-entries=" + strconv.Itoa(int(ptr.Deref(r.CacheEntries, defaultCacheEntries))),
		"--token-file=" + tokenDir + "/" + tokenKey,
	}
}

// routerService is the stable address clients send queries to.
func routerService(idx *annv1alpha1.AnnIndex) *corev1.Service {
	l := componentLabels(idx, componentRouter)
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: routerName(idx), Namespace: idx.Namespace, Labels: l},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: componentLabels(idx, componentRouter),
			Ports:    []corev1.ServicePort{{Name: "http", Port: httpPort, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}},
		},
	}
}

// routerDeployment runs the stateless query routers. A rolling update keeps every old
// router until its replacement is ready (maxUnavailable 0), so queries never lose
// capacity during a roll.
func routerDeployment(idx *annv1alpha1.AnnIndex) *appsv1.Deployment {
	l := componentLabels(idx, componentRouter)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: routerName(idx), Namespace: idx.Namespace, Labels: l},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(max(idx.Spec.Router.Replicas, 1)),
			Selector: &metav1.LabelSelector{MatchLabels: componentLabels(idx, componentRouter)},
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(0)),
					MaxSurge:       ptr.To(intstr.FromInt32(1)),
				},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      componentLabels(idx, componentRouter),
					Annotations: map[string]string{annotationConfigHash: routerConfigHash(idx)},
				},
				Spec: corev1.PodSpec{
					ServiceAccountName:            serviceAccountName(idx, componentRouter),
					TerminationGracePeriodSeconds: ptr.To[int64](30),
					Affinity:                      &corev1.Affinity{PodAntiAffinity: softAntiAffinity(componentLabels(idx, componentRouter))},
					SecurityContext: &corev1.PodSecurityContext{
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name:            "router",
						Image:           idx.Spec.ShardServer.Image,
						ImagePullPolicy: idx.Spec.ShardServer.ImagePullPolicy,
						Command:         []string{"shardserver", "route"},
						Args:            routerArgs(idx),
						Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: httpPort, Protocol: corev1.ProtocolTCP}},
						Env:             podIdentityEnv(),
						Resources:       idx.Spec.Router.Resources,
						ReadinessProbe:  httpProbe("/readyz", 5, 3),
						LivenessProbe:   httpProbe("/healthz", 10, 3),
						SecurityContext: containerSecurity(),
						VolumeMounts:    []corev1.VolumeMount{{Name: "token", MountPath: tokenDir, ReadOnly: true}},
					}},
					Volumes: []corev1.Volume{tokenVolume(idx)},
				},
			},
		},
	}
}

// applyRouter applies the router Service and Deployment and records the Deployment
// the API server returned, for status.
func (r *AnnIndexReconciler) applyRouter(ctx context.Context, s *scope) (ctrl.Result, error) {
	if err := r.apply(ctx, s.index, routerService(s.index)); err != nil {
		return ctrl.Result{}, err
	}
	d := routerDeployment(s.index)
	if err := r.apply(ctx, s.index, d); err != nil {
		return ctrl.Result{}, err
	}
	s.router = d
	return ctrl.Result{}, nil
}
