#!/bin/bash
#SBATCH --partition=debug
#SBATCH --nodes=1
#SBATCH --time=1
#SBATCH --no-requeue
#SBATCH --output=/tmp/rec/%A_%a.out
sleep 4
