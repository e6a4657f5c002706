#!/usr/bin/env bash
# Creates the RDS PostgreSQL Multi-AZ instance for AppStack in the VPC of the eksctl cluster
# (deploy/eks/cluster.yaml): a subnet group on the cluster's private subnets, a security
# group that admits PostgreSQL only from the cluster's nodes, and the instance with its
# master password managed by RDS in Secrets Manager. Prints the endpoint and the secret ARN
# that deploy/eks/external-secrets.yaml needs. Needs the AWS CLI v2 and rights on RDS, EC2
# and Secrets Manager. About 15–20 minutes (Multi-AZ creates a standby in another zone).
#
#   CLUSTER=appstack REGION=eu-west-1 deploy/eks/create-rds.sh
set -euo pipefail

CLUSTER=${CLUSTER:-appstack}
REGION=${REGION:-eu-west-1}
DB_ID=${DB_ID:-appstack-db}
DB_CLASS=${DB_CLASS:-db.m7g.large}     # db.t4g.medium for a test install (see the cost notes)
DB_STORAGE_GB=${DB_STORAGE_GB:-50}
aws() { command aws --region "$REGION" "$@"; }

vpc=$(aws eks describe-cluster --name "$CLUSTER" \
  --query cluster.resourcesVpcConfig.vpcId --output text)
# The EKS cluster security group: managed node groups' nodes (and so the pods) carry it.
node_sg=$(aws eks describe-cluster --name "$CLUSTER" \
  --query cluster.resourcesVpcConfig.clusterSecurityGroupId --output text)
# eksctl tags its private subnets for internal load balancers.
subnets=$(aws ec2 describe-subnets \
  --filters "Name=vpc-id,Values=$vpc" "Name=tag:kubernetes.io/role/internal-elb,Values=1" \
  --query 'Subnets[].SubnetId' --output text)
echo "VPC $vpc, node security group $node_sg, private subnets: $subnets"

aws rds create-db-subnet-group --db-subnet-group-name "$DB_ID" \
  --db-subnet-group-description "AppStack PostgreSQL ($CLUSTER)" \
  --subnet-ids $subnets >/dev/null

db_sg=$(aws ec2 create-security-group --group-name "$DB_ID" \
  --description "AppStack PostgreSQL: 5432 from the EKS nodes of $CLUSTER" \
  --vpc-id "$vpc" --query GroupId --output text)
aws ec2 authorize-security-group-ingress --group-id "$db_sg" \
  --protocol tcp --port 5432 --source-group "$node_sg" >/dev/null

# No --engine-version: RDS's default PostgreSQL version for new instances.
aws rds create-db-instance \
  --db-instance-identifier "$DB_ID" \
  --engine postgres \
  --db-instance-class "$DB_CLASS" \
  --multi-az \
  --storage-type gp3 --allocated-storage "$DB_STORAGE_GB" --storage-encrypted \
  --db-name appstack \
  --master-username appstack \
  --manage-master-user-password \
  --db-subnet-group-name "$DB_ID" \
  --vpc-security-group-ids "$db_sg" \
  --no-publicly-accessible \
  --backup-retention-period 7 \
  --deletion-protection \
  --copy-tags-to-snapshot \
  --tags Key=app.kubernetes.io/part-of,Value=appstack >/dev/null

echo "waiting for $DB_ID to become available (15–20 minutes)…"
aws rds wait db-instance-available --db-instance-identifier "$DB_ID"

aws rds describe-db-instances --db-instance-identifier "$DB_ID" \
  --query 'DBInstances[0].{RDS_ENDPOINT: Endpoint.Address, RDS_SECRET_ARN: MasterUserSecret.SecretArn}' \
  --output table
